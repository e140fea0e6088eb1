"""Speed of the exact uniform (greedy max-min) order against the plain loop.

For N = 50k and 200k documents it orders up to k = N/2 with ``uniform_order``
and with ``reference_uniform_order`` (the plain loop, same quantised
arithmetic), checks the two orders are identical, pick for pick and distance
for distance, and reports the speedup. For N = 1M it times k = 100k with the
fast order alone (the plain loop would take over half an hour). For context it
also times the loop a user would write in float32 numpy on a prefix (not
exact: it departs from the exact order after some hundreds of picks).

Data: at 50k, Word2Vec embeddings of the Stanford Alpaca instructions from
``../shared/data/alpaca_data.json`` (real text) when that file is present;
otherwise, and at 200k and 1M (no real corpus here is that large), a
clustered synthetic set (``clustered_embeddings``) shaped like text
embeddings: 300 Gaussian clusters in 100 dimensions whose covariance has a
power-law spectrum (eigenvalue i proportional to i^-1.2, as averaged word
vectors have), plus a common offset direction.

Run: ``.venv/bin/python benchmarks/selection.py [--smoke]`` (about 10 minutes);
the last line printed is one JSON object. ``--smoke`` runs every part at the
``SMOKE`` sizes, the real-text part on gensim's small corpus (the keys keep
the full sizes' names).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from corpora import ALPACA, SMALL_CORPUS
from smoke import add_smoke_flag

from trainables.data.corpus import read_documents, resolve_corpus
from trainables.data.prepare import corpus_hash
from trainables.selection.embeddings import EmbeddingConfig, document_embeddings, embedded
from trainables.selection.orderings import reference_uniform_order, uniform_order


@dataclass(frozen=True)
class Sizes:
    """What each part orders; the JSON keys keep the full run's names (``run_200k``) at any sizes."""

    synthetic_50k: int  # the 50k set's documents when it is synthetic
    n_200k: int
    k_200k: int
    n_1m: int
    k_1m: int
    float32_picks: int  # of the float32 loop timed at 200k


FULL = Sizes(50_000, 200_000, 100_000, 1_000_000, 100_000, 2000)
SMOKE = Sizes(2_000, 4_000, 2_000, 10_000, 2_000, 100)


def clustered_embeddings(n: int, dim: int = 100, clusters: int = 300, seed: int = 0) -> np.ndarray:
    """A synthetic set shaped like averaged word vectors (see the module docstring)."""
    rng = np.random.default_rng(seed)
    spectrum = np.sqrt(np.arange(1, dim + 1) ** -1.2)
    rotation, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    means = (rng.normal(size=(clusters, dim)) * spectrum) @ rotation.T
    points = means[rng.integers(0, clusters, n)]
    points += (rng.normal(size=(n, dim)) * spectrum * 0.7) @ rotation.T
    return (points + 1.5 * rotation[:, 0]).astype(np.float32)


def real_embeddings(corpus: Path) -> np.ndarray | None:
    """Word2Vec embeddings of the documents of ``corpus``; None if it is absent."""
    if not corpus.is_file():
        print(f"{corpus} is absent: using the synthetic set at 50k too", file=sys.stderr)
        return None
    documents = read_documents(corpus)
    with tempfile.TemporaryDirectory() as cache:
        vectors = document_embeddings(documents, EmbeddingConfig(), Path(cache), corpus_hash(documents))
    return vectors[embedded(vectors)]


def compare(name: str, vectors: np.ndarray, k: int) -> dict[str, Any]:
    started = time.perf_counter()
    fast, fast_dist = uniform_order(vectors, k)
    fast_s = time.perf_counter() - started
    print(f"{name}: fast {fast_s:.1f} s for k={k}", file=sys.stderr)
    started = time.perf_counter()
    plain, plain_dist = reference_uniform_order(vectors, k)
    plain_s = time.perf_counter() - started
    identical = bool(np.array_equal(fast, plain) and np.array_equal(fast_dist, plain_dist))
    print(f"{name}: plain loop {plain_s:.1f} s; identical: {identical}", file=sys.stderr)
    speedup = plain_s / fast_s
    return {"n": len(vectors), "k": k, "fast_s": fast_s, "plain_s": plain_s, "speedup": speedup, "identical": identical}


def float32_loop_seconds_per_pick(vectors: np.ndarray, picks: int) -> float:
    """The loop a user would write: float32 numpy, one pass over all vectors per pick."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    mind = 2 - 2 * (unit @ unit[0])
    started = time.perf_counter()
    for _ in range(picks):
        j = int(np.argmax(mind))
        np.minimum(mind, 2 - 2 * (unit @ unit[j]), out=mind)
    return (time.perf_counter() - started) / picks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-1m", action="store_true", help="leave out the 1M-document timing")
    add_smoke_flag(parser)
    args = parser.parse_args()
    sizes, corpus = (SMOKE, resolve_corpus(SMALL_CORPUS)) if args.smoke else (FULL, ALPACA)
    print(f"torch threads: {torch.get_num_threads()}", file=sys.stderr)
    result: dict[str, Any] = {}
    real = real_embeddings(corpus)
    data_50k = real if real is not None else clustered_embeddings(sizes.synthetic_50k)
    result["data_50k"] = f"word2vec of {corpus.name}" if real is not None else "clustered synthetic"
    result["run_50k"] = compare("50k", data_50k, len(data_50k) // 2)
    data_200k = clustered_embeddings(sizes.n_200k)
    result["run_200k"] = compare("200k", data_200k, sizes.k_200k)
    result["float32_loop_ms_per_pick_200k"] = 1e3 * float32_loop_seconds_per_pick(data_200k, sizes.float32_picks)
    if not args.skip_1m:
        data_1m = clustered_embeddings(sizes.n_1m)
        started = time.perf_counter()
        uniform_order(data_1m, sizes.k_1m)
        result["seconds_1m_100k"] = time.perf_counter() - started
        print(f"1M: {result['seconds_1m_100k']:.1f} s for k={sizes.k_1m}", file=sys.stderr)
    result["speedup_50k"] = result["run_50k"]["speedup"]
    result["speedup_200k"] = result["run_200k"]["speedup"]
    result["speedup_200k_vs_float32_loop"] = (
        result["float32_loop_ms_per_pick_200k"] / 1e3 * sizes.k_200k / result["run_200k"]["fast_s"]
    )
    result["identical"] = result["run_50k"]["identical"] and result["run_200k"]["identical"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
