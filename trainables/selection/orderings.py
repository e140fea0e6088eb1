"""Orderings of a corpus for data selection; every subset a trial trains on is a prefix of one.

Strategies:

- ``random``: a seeded permutation of the training documents.
- ``uniform``: greedy max-min (farthest point, Gonzalez's greedy k-center) under
  cosine distance between document embeddings. It starts at the embedded
  document nearest the centroid of all embedded documents; each next pick is
  the document farthest from everything picked so far, ties going to the lowest
  index. The smallest pairwise distance of a prefix (h_min) is then the distance
  at which its last document was picked, and is at least half the best h_min
  any subset of that size can have.

Documents without an embedding (no in-vocabulary word) follow every embedded
document in a uniform order, in index order: they carry no position to be
uniform about.

**Exactness.** Between unit vectors, cosine distance is ``|u - v|^2 / 2``, so
the greedy runs on squared Euclidean distances between unit vectors quantised
to multiples of 2^-24 and held in float64. Every product and partial sum is
then an integer below 2^53, which any BLAS kernel, summation order or device
computes exactly: ``uniform_order`` and the plain loop ``reference_uniform_order``
see bit-identical distances and return identical orders, ties included.

**Speed.** The plain loop reads all N vectors for every pick. ``uniform_order``
(1) certifies many picks per pass: among the ``batch`` points of largest
current distance it replays the greedy with their exact mutual distances, and
a pick is certain while it beats every point outside them (their distances
can only fall); (2) updates the other points only where a new pick can come
closer than their current distance: a lower bound from a projection onto the
top principal directions plus the residual norm, one float32 GEMM per chunk
of points, rules out nearly every pair; the survivors are checked in float32
over all dimensions and then exactly. The float32 steps only discard pairs
whose exact distance provably cannot win, with margins derived below. Those
margins assume IEEE float32 products: on CUDA with TF32 on (as training turns
it on), the GEMM would read only 10 mantissa bits, so ``uniform_order`` runs
with TF32 off whatever the global setting (``trainables.speed.strict_float32``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from trainables.speed import strict_float32

QUANT_BITS = 24
_SCALE = 2.0 ** (2 * QUANT_BITS)  # squared distances are held in units of 2^-48
_U32 = 2.0**-24  # float32 unit roundoff
_PICKED = -1.0  # distance given to picked points, below any real one, so duplicates are never picked twice
# (point, pick) products per chunk of the lower bounds' GEMM. On a CPU a chunk's products stay in cache
# (4 MB). On a GPU every chunk costs kernel launches and a wait for the host (``nonzero``): chunks of 256 MB
# of products make that wait rare (docs/benchmarks.md, "Trials on one GPU").
_CHUNK_ELEMENTS = {"cpu": 1 << 20, "cuda": 1 << 26}

STRATEGIES = ("full", "random", "uniform")

# Called as progress(picked, total) after every pass of the greedy.
Progress = Callable[[int, int], None]


def quantize(embeddings: np.ndarray) -> np.ndarray:
    """Unit-normalised rows as integer multiples of 2^-24, held (exactly) in float64; zero rows stay zero."""
    rows = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    unit = np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)
    return np.round(unit * 2.0**QUANT_BITS)


def start_index(quantised: np.ndarray) -> int:
    """The row nearest the centroid of all rows (the lowest index on a tie)."""
    unit = quantised / 2.0**QUANT_BITS
    centroid = unit.mean(axis=0)
    return int(np.argmin(((unit - centroid) ** 2).sum(axis=1)))


def reference_uniform_order(embeddings: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The plain greedy loop over rows of ``embeddings``: (picked rows, cosine distance at each pick).

    The definition ``uniform_order`` must reproduce; O(N k d) reads of memory.
    """
    q = quantize(embeddings)
    n = len(q)
    k = _check_k(k, n)
    sq = np.einsum("ij,ij->i", q, q)
    start = start_index(q)
    mind = sq + sq[start] - 2 * (q @ q[start])
    mind[start] = _PICKED
    order, dist = [start], [math.inf]
    for _ in range(k - 1):
        j = int(np.argmax(mind))
        order.append(j)
        dist.append(mind[j] / _SCALE / 2)
        np.minimum(mind, sq + sq[j] - 2 * (q @ q[j]), out=mind)
        mind[j] = _PICKED
    return np.array(order, dtype=np.int64), np.array(dist)


def uniform_order(
    embeddings: np.ndarray,
    k: int,
    *,
    batch: int = 1024,
    directions: int = 40,
    device: str | torch.device | None = None,
    progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The first ``k`` picks of the greedy max-min order of the rows, exactly as ``reference_uniform_order``.

    ``batch`` bounds the picks certified per pass; ``directions`` is the
    dimension of the projection used for lower bounds (any value gives the
    same order; it only changes speed). ``device`` defaults to CUDA when
    available. ``progress`` is called with (picked, k) after each pass.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> points = rng.normal(size=(500, 8))
        >>> fast, _ = uniform_order(points, 50)
        >>> slow, _ = reference_uniform_order(points, 50)
        >>> bool((fast == slow).all())
        True
    """
    if batch < 1 or directions < 1:
        raise ValueError(f"batch and directions must be at least 1, got {batch} and {directions}")
    q = quantize(embeddings)
    n, dim = q.shape
    k = _check_k(k, n)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    # The lower bounds' float32 GEMM must round as IEEE float32 does (see the module docstring).
    with strict_float32():
        x = torch.from_numpy(q).to(dev)
        sq = (x * x).sum(1)
        bounds = _LowerBounds(q, min(directions, dim), dev)
        x32 = (x / 2.0**QUANT_BITS).to(torch.float32)
        sq32 = (x32 * x32).sum(1)
        # Float32 error of a squared distance between vectors of norm <= 1, summed over dim terms.
        full_margin = 8 * (dim + 3) * _U32

        start = start_index(q)
        mind = sq + sq[start] - 2 * (x @ x[start])
        mind[start] = _PICKED
        order, dist = [start], [math.inf]
        while len(order) < k:
            picks, picked_dist = _certified_picks(x, sq, mind, batch, k - len(order))
            order.extend(picks.tolist())
            dist.extend((picked_dist / _SCALE / 2).tolist())
            new = torch.from_numpy(picks).to(dev)
            mind[new] = _PICKED
            rows, cols = bounds.candidates(mind, new)
            if len(rows):
                near = sq32[rows] + sq32[new][cols] - 2 * (x32[rows] * x32[new][cols]).sum(1)
                keep = near < mind[rows].to(torch.float32) / _SCALE + full_margin
                rows, cols = rows[keep], cols[keep]
                exact = sq[rows] + sq[new][cols] - 2 * (x[rows] * x[new][cols]).sum(1)
                mind.scatter_reduce_(0, rows, exact, reduce="amin")
            if progress:
                progress(len(order), k)
        return np.array(order, dtype=np.int64), np.array(dist)


def _check_k(k: int, n: int) -> int:
    if n == 0:
        raise ValueError("no rows to order")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    return min(k, n)


def _certified_picks(
    x: torch.Tensor, sq: torch.Tensor, mind: torch.Tensor, batch: int, wanted: int
) -> tuple[np.ndarray, np.ndarray]:
    """The next picks of the greedy that are certain without updating the points outside the candidates."""
    best = mind.max()
    first = int(torch.nonzero(mind == best)[0])  # the greedy's own tie rule: lowest index
    size = min(batch, len(mind) - 1)
    values, indices = torch.topk(mind, size + 1)
    outside = float(values[-1])  # no point outside the candidates is farther than this, now or later
    candidates = indices[:size][values[:size] > outside].cpu().numpy()
    candidates = np.union1d(candidates, [first])  # sorted by index, so argmax breaks ties by index
    c = x[torch.from_numpy(candidates).to(x.device)]
    csq = sq[torch.from_numpy(candidates).to(x.device)]
    mutual = (csq[:, None] + csq[None, :] - 2 * (c @ c.T)).cpu().numpy()
    current = mind[torch.from_numpy(candidates).to(x.device)].cpu().numpy().copy()
    open_ = np.ones(len(candidates), dtype=bool)
    at = int(np.searchsorted(candidates, first))
    picks, picked_dist = [], []
    while True:
        picks.append(candidates[at])
        picked_dist.append(current[at])
        open_[at] = False
        np.minimum(current, mutual[at], out=current)
        if len(picks) == wanted or not open_.any():
            break
        remaining = np.where(open_, current, -np.inf)
        if not remaining.max() > outside:
            break
        at = int(np.argmax(remaining))
    return np.array(picks, dtype=np.int64), np.array(picked_dist)


class _LowerBounds:
    """Which (point, new pick) pairs could bring a point closer, by a projected lower bound.

    With z the projection onto the top principal directions and r the norm of
    the residual, |x - c|^2 >= |z_x - z_c|^2 + (r_x - r_c)^2 = |z'_x - z'_c|^2
    for z' = [z, r]. A pair can matter only if that bound is below the point's
    current distance t; with a_x = [z'_x, 1, t - |z'_x|^2] and
    b_c = [2 z'_c, -|z'_c|^2, 1], that is a_x . b_c > 0: one GEMM and one sign.
    """

    def __init__(self, q: np.ndarray, directions: int, device: torch.device, sample: int = 20_000) -> None:
        unit = q / 2.0**QUANT_BITS
        rows = np.random.default_rng(0).choice(len(unit), min(sample, len(unit)), replace=False)
        mean = unit[rows].mean(axis=0)
        _, _, basis = np.linalg.svd(unit[rows] - mean, full_matrices=False)
        centred = unit - mean
        z = centred @ basis[:directions].T
        residual = np.linalg.norm(centred - z @ basis[:directions], axis=1, keepdims=True)
        self._z = torch.from_numpy(np.concatenate([z, residual], axis=1)).to(device)
        self._z_sq = (self._z * self._z).sum(1)
        ones = torch.ones(len(q), 1, dtype=torch.float64, device=device)
        self._a = torch.cat([self._z, ones, torch.zeros_like(ones)], dim=1).to(torch.float32)
        # Float32 error of a_x . b_c: (n + 4) roundings of terms whose absolute sum is at most
        # |a||b| <= 6.4 * 5.8 (|z'| <= 2, t <= 4), doubled for safety.
        self._margin = 2 * (self._a.shape[1] + 4) * _U32 * 40.0
        self._active = torch.arange(len(q), device=device)
        self._a_active = self._a
        self._since_compaction = 0

    def candidates(self, mind: torch.Tensor, new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(point, pick) index pairs that need a closer look; ``new`` indexes the latest picks."""
        self._since_compaction += len(new)
        if self._since_compaction > 0.1 * len(self._active):
            # Picked points never move again; dropping them shrinks every later GEMM.
            self._active = self._active[mind[self._active] > _PICKED]
            self._a_active = self._a[self._active]
            self._since_compaction = 0
        a = self._a_active
        a[:, -1] = (mind[self._active] / _SCALE + self._margin - self._z_sq[self._active]).to(torch.float32)
        zc = self._z[new]
        b = torch.cat([2 * zc, -(zc * zc).sum(1, keepdim=True), torch.ones_like(zc[:, :1])], dim=1)
        b = b.to(torch.float32).T.contiguous()
        chunk = max(256, _CHUNK_ELEMENTS.get(a.device.type, _CHUNK_ELEMENTS["cpu"]) // len(new))
        empty = torch.zeros(0, dtype=torch.long, device=a.device)
        found_rows, found_cols = [empty], [empty]
        for begin in range(0, len(a), chunk):
            rows, cols = ((a[begin : begin + chunk] @ b) > 0).nonzero(as_tuple=True)
            found_rows.append(rows + begin)
            found_cols.append(cols)
        rows = torch.cat(found_rows)
        return self._active[rows], torch.cat(found_cols)


@dataclass(frozen=True)
class SelectionOrder:
    """All training documents in the order a strategy selects them.

    ``distances[i]`` is the cosine distance of document ``documents[i]`` to the
    nearest one before it when it was picked (infinite for the first); NaN
    where the order does not rank by distance (``random``, and documents past
    ``ranked`` in a uniform order).
    """

    strategy: str
    documents: np.ndarray
    distances: np.ndarray
    ranked: int

    def size(self, fraction: float) -> int:
        """Documents in the prefix for ``fraction`` of the corpus: at least one."""
        return max(1, min(len(self.documents), round(fraction * len(self.documents))))

    def prefix(self, fraction: float) -> np.ndarray:
        return self.documents[: self.size(fraction)]

    def token_prefix(self, lengths: np.ndarray, fraction: float) -> np.ndarray:
        """The shortest prefix whose documents (of ``lengths`` tokens) hold ``fraction`` of all tokens: at least one.

        A uniform order ranks only its first ``ranked`` documents; a prefix past them is refused, as its subset
        would not be the greedy one.
        """
        held = np.cumsum(lengths[self.documents])
        size = min(len(self.documents), int(np.searchsorted(held, fraction * held[-1] * (1 - 1e-12))) + 1)
        if self.strategy == "uniform" and size > self.ranked:
            raise ValueError(
                f"{fraction:g} of the tokens takes {size} documents of the uniform order, which ranks {self.ranked}"
            )
        return self.documents[:size]

    def save(self, path: Path) -> None:
        table = pa.table(
            {
                "document": self.documents,
                "rank": np.arange(len(self.documents)),
                "distance": self.distances,
            }
        ).replace_schema_metadata({"strategy": self.strategy, "ranked": str(self.ranked)})
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".tmp.parquet")
        pq.write_table(table, partial)
        partial.replace(path)

    @classmethod
    def load(cls, path: Path) -> SelectionOrder:
        table = pq.read_table(path)
        meta = table.schema.metadata or {}
        return cls(
            strategy=meta[b"strategy"].decode(),
            documents=table.column("document").to_numpy(),
            distances=table.column("distance").to_numpy(),
            ranked=int(meta[b"ranked"]),
        )


def random_order(n_documents: int, seed: int) -> SelectionOrder:
    documents = np.random.default_rng(seed).permutation(n_documents).astype(np.int64)
    return SelectionOrder("random", documents, np.full(n_documents, np.nan), 0)


def uniform_document_order(embeddings: np.ndarray, k: int, progress: Progress | None = None) -> SelectionOrder:
    """The uniform order of all documents, greedy for the first ``k`` embedded ones."""
    has_vector = np.any(embeddings != 0, axis=1)
    embedded = np.flatnonzero(has_vector)
    if len(embedded) == 0:
        raise ValueError("no document has an embedding (no word is in the vocabulary)")
    picked, dist = uniform_order(embeddings[embedded], k, progress=progress)
    greedy = embedded[picked]
    rest_embedded = np.setdiff1d(embedded, greedy)  # sorted
    documents = np.concatenate([greedy, rest_embedded, np.flatnonzero(~has_vector)])
    distances = np.concatenate([dist, np.full(len(documents) - len(dist), np.nan)])
    return SelectionOrder("uniform", documents, distances, len(greedy))


def subset_metrics(embeddings: np.ndarray, subset: np.ndarray, chunk: int = 4096) -> dict[str, float]:
    """Uniformity of a subset of documents, in cosine distance over embedded documents.

    ``h_min``: the smallest distance between two members; ``mean_nn``: the
    members' mean distance to their nearest other member; ``covering_radius``:
    the largest distance from any embedded document to its nearest member.
    """
    has_vector = np.any(embeddings != 0, axis=1)
    members = subset[has_vector[subset]]
    corpus = torch.from_numpy(np.ascontiguousarray(embeddings[has_vector], dtype=np.float32))
    chosen = torch.from_numpy(np.ascontiguousarray(embeddings[members], dtype=np.float32))
    nearest_member = torch.full((len(corpus),), math.inf)
    nearest_other = torch.full((len(chosen),), math.inf)
    for begin in range(0, len(chosen), chunk):
        block = chosen[begin : begin + chunk]
        nearest_member = torch.minimum(nearest_member, (1 - corpus @ block.T).min(dim=1).values)
        within = 1 - chosen @ block.T
        within[begin + torch.arange(len(block)), torch.arange(len(block))] = math.inf  # not oneself
        nearest_other = torch.minimum(nearest_other, within.min(dim=1).values)
    finite = nearest_other[torch.isfinite(nearest_other)].clamp(min=0)
    return {
        "h_min": float(finite.min()) if len(finite) else math.nan,
        "mean_nn": float(finite.mean()) if len(finite) else math.nan,
        "covering_radius": float(nearest_member.clamp(min=0).max()) if len(members) else math.nan,
    }
