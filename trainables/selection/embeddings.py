"""Document embeddings with gensim: a document is the mean of its word vectors, L2-normalised.

Word vectors come from a Word2Vec model trained on the documents themselves
(one worker thread, so a fixed seed gives the same vectors on every run), or
from a pretrained KeyedVectors file (gensim's native ``.kv``, or word2vec
``.bin``/``.txt`` format).

A document none of whose words is in the vocabulary has no embedding: its row
is all zeros, ``embedded`` marks it, and the orderings place it after every
embedded document (see ``trainables.selection.orderings``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from trainables.data.corpus import CorpusError

if TYPE_CHECKING:
    from gensim.models import KeyedVectors


class EmbeddingConfig(BaseModel):
    """How documents are embedded for selection."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    vector_size: int = Field(100, ge=2, le=4096)
    window: int = Field(5, ge=1)
    min_count: int = Field(2, ge=1)
    epochs: int | Literal["auto"] = Field("auto", description="passes over the corpus; auto: see auto_epochs")
    seed: int = Field(0, ge=0)
    pretrained: str | None = Field(None, description="KeyedVectors file used instead of training Word2Vec")

    @field_validator("epochs")
    @classmethod
    def _positive(cls, epochs: int | str) -> int | str:
        if isinstance(epochs, int) and epochs < 1:
            raise ValueError(f"epochs must be at least 1 or 'auto', got {epochs}")
        return epochs

    def key(self) -> str:
        settings = self.model_dump()
        if self.pretrained:
            stat = Path(self.pretrained).stat()
            settings["pretrained"] = [str(Path(self.pretrained).resolve()), stat.st_size, stat.st_mtime_ns]
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def words(document: str) -> list[str]:
    """Lower-cased alphabetic tokens, as gensim's ``simple_preprocess`` makes them."""
    from gensim.utils import simple_preprocess  # gensim (with scipy.stats) takes 0.8 s to import: only here

    return simple_preprocess(document, min_len=2, max_len=30)


def auto_epochs(tokenised: Sequence[list[str]]) -> int:
    """Enough passes for about 3 million word occurrences: at least 5 (gensim's default), at most 100.

    Five passes over a small corpus leave Word2Vec nearly untrained, and every
    document's mean vector then points the same way (on gensim's 300-document
    Lee corpus, a median cosine distance of 1e-5 between documents).
    """
    occurrences = sum(len(doc) for doc in tokenised)
    return max(5, min(100, math.ceil(3_000_000 / max(occurrences, 1))))


def word_vectors(tokenised: Sequence[list[str]], cfg: EmbeddingConfig) -> KeyedVectors:
    if cfg.pretrained:
        return _load_pretrained(Path(cfg.pretrained))
    from gensim.models import Word2Vec

    model = Word2Vec(
        sentences=tokenised,
        vector_size=cfg.vector_size,
        window=cfg.window,
        min_count=cfg.min_count,
        epochs=auto_epochs(tokenised) if cfg.epochs == "auto" else cfg.epochs,
        seed=cfg.seed,
        workers=1,  # more threads make the result depend on scheduling
    )
    return model.wv


def _load_pretrained(path: Path) -> KeyedVectors:
    if not path.is_file():
        raise CorpusError(f"{path}: no such pretrained word-vector file")
    from gensim.models import KeyedVectors

    try:
        if path.suffix in (".bin", ".txt", ".vec"):
            return KeyedVectors.load_word2vec_format(str(path), binary=path.suffix == ".bin")
        return KeyedVectors.load(str(path))
    except Exception as exc:  # gensim raises many types for a file that is not vectors
        raise CorpusError(f"{path}: not a word-vector file gensim can read ({type(exc).__name__}: {exc})") from None


def mean_vectors(tokenised: Sequence[list[str]], vectors: KeyedVectors, chunk: int = 8192) -> np.ndarray:
    """(documents, dim) float32: each row the L2-normalised mean of its in-vocabulary word vectors, or zeros."""
    index = vectors.key_to_index
    out = np.zeros((len(tokenised), vectors.vector_size), dtype=np.float64)
    # Chunks of documents bound the memory of the gathered word vectors.
    for start in range(0, len(tokenised), chunk):
        ids = [[index[w] for w in doc if w in index] for doc in tokenised[start : start + chunk]]
        lengths = np.array([len(i) for i in ids], dtype=np.int64)
        rows = np.flatnonzero(lengths)
        if len(rows) == 0:
            continue
        gathered = vectors.vectors[np.concatenate([ids[r] for r in rows])].astype(np.float64)
        offsets = np.concatenate([[0], np.cumsum(lengths[rows])[:-1]])
        out[start + rows] = np.add.reduceat(gathered, offsets, axis=0)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    np.divide(out, norms, out=out, where=norms > 0)
    return out.astype(np.float32)


def document_embeddings(
    documents: Sequence[str], cfg: EmbeddingConfig, cache_dir: Path, content_hash: str
) -> np.ndarray:
    """Embeddings of ``documents``, cached under their content hash and ``cfg``."""
    path = cache_dir / f"embeddings-{content_hash[:24]}-{cfg.key()}.npy"
    if path.is_file():
        return np.load(path)
    tokenised = [words(doc) for doc in documents]
    embeddings = mean_vectors(tokenised, word_vectors(tokenised, cfg))
    cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(partial, embeddings)
    partial.chmod(0o600)  # embeddings say much of the corpus: the user's alone, as its cached tokens
    partial.replace(path)
    return embeddings


def embedded(embeddings: np.ndarray) -> np.ndarray:
    """Which rows have an embedding (a document with at least one in-vocabulary word)."""
    return np.any(embeddings != 0, axis=1)
