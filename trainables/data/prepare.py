"""A sweep's data, prepared once on the driver: the token file, the validation split, selection orders.

``prepare_sweep_data`` streams the corpus into a token file cached by content
(``trainables.data.tokens``), splits its documents into training and
validation, cuts the fixed validation windows and, when the sweep selects
data, embeds and orders the training documents. Its ``SweepData`` holds the
token file's path, not its tokens: it pickles to eight bytes a training
document, and each trial maps the file and reads the windows it trains on
(``trainables.patch.PatchBatcher``). A sweep places the file on its trials'
storage (``placed_in``), or ships the tokens through Ray's object store where
that storage is a bucket (``shipped``). See docs/architecture.md and, for
the memory this takes, docs/benchmarks.md.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trainables.config import SelectionConfig
from trainables.data.corpus import CorpusError, CorpusFormat, document_chunks, read_documents, resolve_corpus
from trainables.data.tokenizer import BYTES, Tokenizer, TokenizerConfig
from trainables.data.tokens import (
    PRIVATE_FILE,
    CorpusSplit,
    TokenizedCorpus,
    TokenSpans,
    corpus_hash,
    count_and_hash,
    tokenize_cached,
)
from trainables.selection.embeddings import EmbeddingConfig, document_embeddings
from trainables.selection.orderings import (
    Progress,
    SelectionOrder,
    random_order,
    subset_metrics,
    uniform_document_order,
)

# How a uniform order is computed: uniform_document_order's signature (in process, or as a Ray task).
UniformOrdering = Callable[[np.ndarray, int, Progress | None], SelectionOrder]


def split_documents(n_documents: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of document indices into (train, validation), each sorted."""
    if n_documents < 2:
        raise CorpusError(f"a corpus needs at least 2 documents to split off validation, got {n_documents}")
    order = np.random.default_rng(seed).permutation(n_documents)
    n_val = min(n_documents - 1, max(1, round(val_fraction * n_documents)))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


@dataclass(frozen=True)
class SelectionPlan:
    """The selection work a sweep needs done once: orders for ``strategies``, greedy up to ``max_fraction`` of the
    documents and far enough to hold ``max_token_fraction`` of their tokens."""

    strategies: tuple[str, ...]
    max_fraction: float
    embedding: EmbeddingConfig
    seed: int
    max_token_fraction: float = 0.0


@dataclass(frozen=True)
class SweepData:
    """What every trial of a sweep shares: training documents, fixed validation windows, selection orders.

    ``train`` reads the token file in place; ``embeddings`` (training
    documents' vectors) is present when the sweep can select by ``random`` or
    ``uniform``, so trials can measure their subset. ``val_bytes`` is the
    UTF-8 bytes of text the validation windows' targets stand for, which turns
    a loss per token into bits per byte (``bits_per_byte``).
    """

    train: CorpusSplit
    val_windows: np.ndarray
    corpus_hash: str
    val_bytes: int
    tokenizer: str = BYTES.id
    vocab_size: int = BYTES.vocab_size
    orders: Mapping[str, SelectionOrder] = field(default_factory=dict)
    embeddings: np.ndarray | None = None

    @property
    def train_tokens(self) -> int:
        return self.train.n_tokens

    def bits_per_byte(self, val_loss: float) -> float:
        """A mean validation loss in nats per token as bits per byte of the validation text."""
        return val_loss * self.val_windows[:, 1:].size / (self.val_bytes * math.log(2))

    def training_documents(self, selection: SelectionConfig) -> np.ndarray:
        """The training documents a trial with this selection uses, in index order."""
        if selection.strategy == "full":
            return np.arange(self.train.n_documents)
        if selection.strategy not in self.orders:
            raise ValueError(f"selection strategy {selection.strategy!r} was not prepared for this sweep")
        order = self.orders[selection.strategy]
        if selection.fraction_of == "tokens":
            return np.sort(order.token_prefix(self.train.lengths, selection.fraction))
        return np.sort(order.prefix(selection.fraction))

    def selection_metrics(self, documents: np.ndarray) -> dict[str, float]:
        """Size of a trial's subset and, when embeddings exist, how uniform it is."""
        metrics = {
            "selection_documents": float(len(documents)),
            "selection_tokens": float(self.train.lengths[documents].sum()),
        }
        if self.embeddings is not None:
            metrics.update({f"selection_{k}": v for k, v in subset_metrics(self.embeddings, documents).items()})
        return metrics

    def placed_in(self, folder: Path) -> SweepData:
        """This data reading its token file from ``folder`` (the trials' storage), linked or copied there once."""
        return dataclasses.replace(self, train=CorpusSplit(self.train.corpus.placed_in(folder), self.train.ids))

    def shipped(self) -> SweepData:
        """This data carrying its tokens when pickled, for trials that share no storage with the driver."""
        return dataclasses.replace(self, train=CorpusSplit(self.train.corpus.shipped(), self.train.ids))


def prepare_sweep_data(
    corpus: str,
    *,
    val_fraction: float,
    seed: int,
    seq_len: int,
    eval_tokens: int,
    cache_dir: Path,
    corpus_format: CorpusFormat | None = None,
    tokenizer: TokenizerConfig | None = None,
    selection: SelectionPlan | None = None,
    progress: Progress | None = None,
    uniform: UniformOrdering = uniform_document_order,
) -> SweepData:
    """Read, tokenise (cached), split and order a corpus, once per sweep.

    The validation split is taken here, before any data selection, so every
    trial is scored on the same ``eval_tokens // seq_len`` windows, and no
    validation document is ever selected; a BPE tokenizer learns from the
    training documents only. The training split is the training
    documents' spans of the token file; it is never copied out. Selection
    embeds the training documents' texts, so a sweep that selects reads the
    corpus a second time, whole. ``uniform`` computes a uniform order (here,
    unless the caller runs it elsewhere: ``trainables.selection.order_task``).
    """
    path = resolve_corpus(corpus)
    chunks = functools.partial(document_chunks, path, corpus_format)
    tokens, content, (train_ids, val_ids), used = _tokenized(
        chunks, tokenizer or TokenizerConfig(), val_fraction, seed, cache_dir
    )
    val_windows = _validation_windows(corpus, tokens.spans(val_ids), seq_len, eval_tokens)
    val_bytes = int(used.token_bytes()[val_windows[:, 1:]].sum())
    prepared = SweepData(CorpusSplit(tokens, train_ids), val_windows, content, val_bytes, used.id, used.vocab_size)
    if selection is None or not selection.strategies:
        return prepared
    documents = read_documents(path, corpus_format)
    train_documents = [documents[i] for i in train_ids]
    train_hash = corpus_hash(train_documents)
    embeddings = document_embeddings(train_documents, selection.embedding, cache_dir, train_hash)
    orders = {}
    for strategy in selection.strategies:
        if strategy == "random":
            orders[strategy] = random_order(len(train_ids), selection.seed)
        else:
            order_path = cache_dir / f"order-uniform-{train_hash[:24]}-{selection.embedding.key()}.parquet"
            orders[strategy] = _uniform_order_holding(
                embeddings, prepared.train.lengths, selection, order_path, progress, uniform
            )
    return dataclasses.replace(prepared, orders=orders, embeddings=embeddings)


def _tokenized(
    chunks: Callable[[], Iterable[Sequence[str]]],
    config: TokenizerConfig,
    val_fraction: float,
    seed: int,
    cache_dir: Path,
) -> tuple[TokenizedCorpus, str, tuple[np.ndarray, np.ndarray], Tokenizer]:
    """The corpus's token file, its content hash, its (train, validation) split and the tokenizer that read it."""
    if config.kind == "bytes":  # nothing to learn: one pass tokenises, hashes and counts
        tokens, content = tokenize_cached(chunks(), cache_dir, BYTES)
        return tokens, content, split_documents(tokens.n_documents, val_fraction, seed), BYTES
    from trainables.data.bpe import cached_bpe  # only where BPE is used: ``tokenizers`` is a native library

    n_documents, content = count_and_hash(chunks())
    train_ids, val_ids = split_documents(n_documents, val_fraction, seed)
    training_text = functools.partial(_documents_among, chunks, train_ids, n_documents)
    used = cached_bpe(config, training_text, len(train_ids), f"{content}|{val_fraction}|{seed}", cache_dir)
    tokens, _ = tokenize_cached(chunks(), cache_dir, used)
    return tokens, content, (train_ids, val_ids), used


def _documents_among(
    chunks: Callable[[], Iterable[Sequence[str]]], chosen: np.ndarray, n_documents: int
) -> Iterator[str]:
    """The ``chosen`` documents (by index) of a corpus read a chunk at a time, in corpus order."""
    wanted = np.zeros(n_documents, dtype=bool)
    wanted[chosen] = True
    index = 0
    for chunk in chunks():
        for document in chunk:
            if wanted[index]:
                yield document
            index += 1


def _validation_windows(corpus: str, stream: TokenSpans, seq_len: int, eval_tokens: int) -> np.ndarray:
    """The first ``eval_tokens // seq_len`` windows of ``seq_len + 1`` tokens of the validation stream, at most."""
    n_windows = min(eval_tokens // seq_len, (len(stream) - 1) // seq_len)
    if n_windows < 1:
        raise CorpusError(
            f"{corpus}: the validation split holds {len(stream)} tokens, fewer than one "
            f"window of {seq_len + 1}; raise val_fraction or eval_tokens"
        )
    return stream.windows(np.arange(n_windows) * seq_len, seq_len + 1)


def _uniform_order_holding(
    embeddings: np.ndarray,
    lengths: np.ndarray,
    selection: SelectionPlan,
    path: Path,
    progress: Progress | None,
    uniform: UniformOrdering,
) -> SelectionOrder:
    """The uniform order greedy for ``max_fraction`` of the documents and, doubling that share as needed, for
    ``max_token_fraction`` of their tokens (a uniform prefix favours short documents, so it needs more of them)."""
    fraction = selection.max_fraction
    while True:
        order = cached_uniform_order(embeddings, fraction, path, progress, uniform)
        held = lengths[order.documents[: order.ranked]].sum()
        if fraction >= 1 or held >= selection.max_token_fraction * lengths.sum():
            return order
        fraction = min(1.0, 2 * fraction)


def cached_uniform_order(
    embeddings: np.ndarray,
    max_fraction: float,
    path: Path,
    progress: Progress | None = None,
    uniform: UniformOrdering = uniform_document_order,
) -> SelectionOrder:
    """The uniform order, greedy far enough for every prefix up to ``max_fraction``; from ``path`` if cached.

    A computed order (by ``uniform``) is saved to ``path`` with mode 0600, as the cache's other files.
    """
    needed = min(len(embeddings), max(1, round(max_fraction * len(embeddings))))
    if path.is_file():
        cached = SelectionOrder.load(path)
        n_embedded = int(np.any(embeddings != 0, axis=1).sum())
        if cached.ranked >= min(needed, n_embedded):
            return cached
    order = uniform(embeddings, needed, progress)
    order.save(path)
    path.chmod(PRIVATE_FILE)
    return order
