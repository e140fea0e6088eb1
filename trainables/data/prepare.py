"""Corpora, tokenisation cache, the validation split and training batches.

Everything here that does not depend on a trial's config runs once per sweep,
on the driver (``prepare_sweep_data``); trials receive the result through
Ray's object store and only cut batches from it (``trainables.patch.PatchBatcher``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from trainables.config import SelectionConfig
from trainables.data import tokenizer
from trainables.data.corpus import CorpusError, CorpusFormat, read_documents, resolve_corpus
from trainables.selection.embeddings import EmbeddingConfig, document_embeddings
from trainables.selection.orderings import (
    Progress,
    SelectionOrder,
    random_order,
    subset_metrics,
    uniform_document_order,
)

# Cached tokens are a reversible copy of a corpus (the tokenizer is byte-level): their owner's alone.
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


@dataclass(frozen=True)
class TokenizedCorpus:
    """Documents as one token array; document ``i`` is ``tokens[offsets[i]:offsets[i+1]]``."""

    tokens: np.ndarray
    offsets: np.ndarray

    @property
    def n_documents(self) -> int:
        return len(self.offsets) - 1

    def select(self, documents: np.ndarray) -> np.ndarray:
        """The chosen documents' tokens, concatenated in the order given."""
        if len(documents) == 0:
            return np.zeros(0, dtype=self.tokens.dtype)
        starts, ends = self.offsets[documents], self.offsets[documents + 1]
        lengths = ends - starts
        # Index of every selected token without a Python loop over documents.
        within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        return self.tokens[np.repeat(starts, lengths) + within]


def corpus_hash(documents: Sequence[str]) -> str:
    """Content hash of a corpus and the tokenizer that reads it."""
    digest = hashlib.sha256(tokenizer.TOKENIZER_ID.encode())
    for doc in documents:
        digest.update(doc.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()


def tokenize_cached(documents: Sequence[str], cache_dir: Path) -> tuple[TokenizedCorpus, Path]:
    """Tokenise ``documents`` or reuse the Parquet file cached under their content hash (written mode 0600)."""
    path = cache_dir / f"tokens-{corpus_hash(documents)[:24]}.parquet"
    if path.is_file():
        column = pq.read_table(path, columns=["tokens"]).column("tokens").combine_chunks()
        tokens = column.flatten().to_numpy(zero_copy_only=False).astype(np.uint16)
        offsets = column.offsets.to_numpy().astype(np.int64)
        return TokenizedCorpus(tokens, offsets), path
    tokens, offsets = tokenizer.encode_documents(documents)
    column = pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), pa.array(tokens))
    cache_dir.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    # Write then rename, so that a concurrent reader never sees half a file.
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    pq.write_table(pa.table({"tokens": column}), partial)
    partial.chmod(PRIVATE_FILE)
    partial.replace(path)
    return TokenizedCorpus(tokens, offsets), path


def split_documents(n_documents: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of document indices into (train, validation), each sorted."""
    if n_documents < 2:
        raise CorpusError(f"a corpus needs at least 2 documents to split off validation, got {n_documents}")
    order = np.random.default_rng(seed).permutation(n_documents)
    n_val = min(n_documents - 1, max(1, round(val_fraction * n_documents)))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


@dataclass(frozen=True)
class SelectionPlan:
    """The selection work a sweep needs done once: orders for ``strategies``, greedy up to ``max_fraction``."""

    strategies: tuple[str, ...]
    max_fraction: float
    embedding: EmbeddingConfig
    seed: int


@dataclass(frozen=True)
class SweepData:
    """What every trial of a sweep shares: training documents, fixed validation windows, selection orders.

    ``embeddings`` (training documents' vectors) is present when the sweep can
    select by ``random`` or ``uniform``, so trials can measure their subset.
    """

    train: TokenizedCorpus
    val_windows: np.ndarray
    corpus_hash: str
    orders: Mapping[str, SelectionOrder] = field(default_factory=dict)
    embeddings: np.ndarray | None = None

    @property
    def train_tokens(self) -> int:
        return len(self.train.tokens)

    def training_documents(self, selection: SelectionConfig) -> np.ndarray:
        """The training documents a trial with this selection uses, in index order."""
        if selection.strategy == "full":
            return np.arange(self.train.n_documents)
        if selection.strategy not in self.orders:
            raise ValueError(f"selection strategy {selection.strategy!r} was not prepared for this sweep")
        return np.sort(self.orders[selection.strategy].prefix(selection.fraction))

    def selection_metrics(self, documents: np.ndarray) -> dict[str, float]:
        """Size of a trial's subset and, when embeddings exist, how uniform it is."""
        metrics = {
            "selection_documents": float(len(documents)),
            "selection_tokens": float(np.diff(self.train.offsets)[documents].sum()),
        }
        if self.embeddings is not None:
            metrics.update({f"selection_{k}": v for k, v in subset_metrics(self.embeddings, documents).items()})
        return metrics


def prepare_sweep_data(
    corpus: str,
    *,
    val_fraction: float,
    seed: int,
    seq_len: int,
    eval_tokens: int,
    cache_dir: Path,
    corpus_format: CorpusFormat | None = None,
    selection: SelectionPlan | None = None,
    progress: Progress | None = None,
) -> SweepData:
    """Read, tokenise (cached), split and order a corpus, once per sweep.

    The validation split is taken here, before any data selection, so every
    trial is scored on the same ``eval_tokens // seq_len`` windows, and no
    validation document is ever selected.
    """
    documents = read_documents(resolve_corpus(corpus), corpus_format)
    corpus_tokens, _ = tokenize_cached(documents, cache_dir)
    train_ids, val_ids = split_documents(corpus_tokens.n_documents, val_fraction, seed)
    train_tokens = corpus_tokens.select(train_ids)
    train_offsets = np.zeros(len(train_ids) + 1, dtype=np.int64)
    np.cumsum(np.diff(corpus_tokens.offsets)[train_ids], out=train_offsets[1:])
    val_stream = corpus_tokens.select(val_ids)
    n_windows = min(eval_tokens // seq_len, (len(val_stream) - 1) // seq_len)
    if n_windows < 1:
        raise CorpusError(
            f"{corpus}: the validation split holds {len(val_stream)} tokens, fewer than one "
            f"window of {seq_len + 1}; raise val_fraction or eval_tokens"
        )
    starts = np.arange(n_windows) * seq_len
    val_windows = val_stream[starts[:, None] + np.arange(seq_len + 1)]
    train = TokenizedCorpus(train_tokens, train_offsets)
    if selection is None or not selection.strategies:
        return SweepData(train, val_windows, corpus_hash(documents))
    train_documents = [documents[i] for i in train_ids]
    train_hash = corpus_hash(train_documents)
    embeddings = document_embeddings(train_documents, selection.embedding, cache_dir, train_hash)
    orders = {}
    for strategy in selection.strategies:
        if strategy == "random":
            orders[strategy] = random_order(len(train_ids), selection.seed)
        else:
            path = cache_dir / f"order-uniform-{train_hash[:24]}-{selection.embedding.key()}.parquet"
            orders[strategy] = cached_uniform_order(embeddings, selection.max_fraction, path, progress)
    return SweepData(train, val_windows, corpus_hash(documents), orders, embeddings)


def cached_uniform_order(
    embeddings: np.ndarray, max_fraction: float, path: Path, progress: Progress | None = None
) -> SelectionOrder:
    """The uniform order, greedy far enough for every prefix up to ``max_fraction``; from ``path`` if cached.

    A computed order is saved to ``path`` with mode 0600, as the cache's other files.
    """
    needed = min(len(embeddings), max(1, round(max_fraction * len(embeddings))))
    if path.is_file():
        cached = SelectionOrder.load(path)
        n_embedded = int(np.any(embeddings != 0, axis=1).sum())
        if cached.ranked >= min(needed, n_embedded):
            return cached
    order = uniform_document_order(embeddings, needed, progress)
    order.save(path)
    path.chmod(PRIVATE_FILE)
    return order
