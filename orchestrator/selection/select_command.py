"""``effsweep select``: order a whole corpus for selection, outside any sweep."""

from __future__ import annotations

from pathlib import Path

from trainables.data.corpus import CorpusFormat, read_documents, resolve_corpus
from trainables.data.prepare import cached_uniform_order, corpus_hash
from trainables.selection.embeddings import EmbeddingConfig, document_embeddings
from trainables.selection.orderings import Progress, SelectionOrder, random_order


def order_corpus(
    corpus: str,
    *,
    strategy: str,
    corpus_format: CorpusFormat,
    embedding: EmbeddingConfig,
    max_fraction: float,
    seed: int,
    cache_dir: Path,
    progress: Progress | None = None,
) -> SelectionOrder:
    """Every document of ``corpus`` (0-based, blank ones dropped) in the order ``strategy`` selects them.

    A uniform order is greedy up to ``max_fraction`` of the documents and
    cached like a sweep's; a random one is a permutation drawn from ``seed``.
    """
    documents = read_documents(resolve_corpus(corpus), corpus_format)
    if strategy == "random":
        return random_order(len(documents), seed)
    content = corpus_hash(documents)
    embeddings = document_embeddings(documents, embedding, cache_dir, content)
    path = cache_dir / f"order-uniform-{content[:24]}-{embedding.key()}.parquet"
    return cached_uniform_order(embeddings, max_fraction, path, progress)
