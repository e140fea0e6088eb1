"""Tokenizers: UTF-8 bytes, or a byte-level BPE trained on the sweep's own training text.

A spec picks one in ``data.tokenizer`` (``TokenizerConfig``). Bytes need no
training and read every corpus with the same 257 tokens (bytes 0..255, and 256
ending a document); BPE (``trainables.data.bpe``) is what language models are
trained on, with shorter sequences for the same text. Losses in nats per token
do not compare across tokenizers; bits per byte do, so every tokenizer says how
many bytes of text each token stands for (``token_bytes``). See
docs/architecture.md (the data package) and README (which loss to compare).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

BYTE_VOCAB_SIZE = 257
# An end-of-document token stands for the one character (a newline) that separates documents in text.
END_OF_DOCUMENT_BYTES = 1
# Embedding rows of a BPE vocabulary are a multiple of this, as GPU matrix shapes like.
VOCAB_MULTIPLE = 64


class TokenizerConfig(BaseModel):
    """``data.tokenizer`` of a spec: ``bytes``, or ``bpe`` with ``vocab_size`` tokens learnt from the training split."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["bytes", "bpe"] = "bytes"
    vocab_size: int | None = Field(None, ge=258, le=2**20, description="BPE tokens to learn (bpe only)")

    @model_validator(mode="after")
    def _size_for_bpe_only(self) -> TokenizerConfig:
        if self.kind == "bytes" and self.vocab_size is not None:
            raise ValueError(f"vocab_size is learnt by bpe only; bytes have {BYTE_VOCAB_SIZE} tokens")
        if self.kind == "bpe" and self.vocab_size is None:
            self.vocab_size = 8192
        return self

    @property
    def model_vocab_size(self) -> int:
        """Embedding rows a model needs for this tokenizer: BPE's padded to a multiple of ``VOCAB_MULTIPLE``."""
        if self.kind == "bytes":
            return BYTE_VOCAB_SIZE
        assert self.vocab_size is not None
        return -(-self.vocab_size // VOCAB_MULTIPLE) * VOCAB_MULTIPLE


class Tokenizer(Protocol):
    """What data preparation needs of a tokenizer."""

    id: str  # names it in cache keys: the kind, its version and, for a trained one, what it learnt
    vocab_size: int
    end_of_document: int

    def encode_documents(self, documents: Sequence[str]) -> tuple[np.ndarray, np.ndarray]: ...

    def decode(self, tokens: Sequence[int] | np.ndarray) -> str: ...

    def token_bytes(self) -> np.ndarray: ...


class ByteTokenizer:
    """UTF-8 bytes are tokens 0..255; token 256 ends a document.

    Example:
        >>> tokens, offsets = BYTES.encode_documents(["hi", "é"])
        >>> tokens.tolist(), offsets.tolist()
        ([104, 105, 256, 195, 169, 256], [0, 3, 6])
    """

    id = "bytes-v1"
    vocab_size = BYTE_VOCAB_SIZE
    end_of_document = 256

    def encode_documents(self, documents: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """One token array (uint16) of every document's bytes followed by ``end_of_document``, and the offsets:
        document ``i`` is ``tokens[offsets[i]:offsets[i + 1]]``."""
        encoded = [doc.encode("utf-8") for doc in documents]
        offsets = document_offsets(encoded)
        # A newline joins the documents; it sits exactly where each end-of-document
        # token belongs, so one frombuffer copies the whole corpus.
        joined = b"\n".join(encoded) + b"\n"
        tokens = np.frombuffer(joined, dtype=np.uint8).astype(np.uint16)
        tokens[offsets[1:] - 1] = self.end_of_document
        return tokens, offsets

    def decode(self, tokens: Sequence[int] | np.ndarray) -> str:
        """Text of a token sequence; end-of-document tokens become newlines."""
        array = np.asarray(tokens, dtype=np.uint16)
        data = np.where(array == self.end_of_document, ord("\n"), array).astype(np.uint8)
        return data.tobytes().decode("utf-8", errors="replace")

    def token_bytes(self) -> np.ndarray:
        return np.ones(self.vocab_size, dtype=np.int64)


BYTES = ByteTokenizer()


def token_dtype(vocab_size: int) -> np.dtype:
    """The dtype of a token file for a vocabulary of ``vocab_size``: uint16 while it fits, else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def document_offsets(documents: Sequence[Sequence[Any]]) -> np.ndarray:
    """Where each document starts in the token array, and its end: each holds its items and an end-of-document."""
    lengths = np.fromiter((len(doc) + 1 for doc in documents), dtype=np.int64, count=len(documents))
    offsets = np.zeros(len(documents) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


def encoded_documents(
    ids: Sequence[Sequence[int]], end_of_document: int, vocab_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Documents' token ids as one array, each followed by ``end_of_document``, and their offsets."""
    offsets = document_offsets(ids)
    tokens = np.full(int(offsets[-1]), end_of_document, dtype=token_dtype(vocab_size))
    for start, doc in zip(offsets[:-1], ids, strict=True):
        tokens[start : start + len(doc)] = doc
    return tokens, offsets
