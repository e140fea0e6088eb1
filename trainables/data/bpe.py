"""Byte-level BPE trained on a sweep's own training text with Hugging Face ``tokenizers``.

The tokenizer GPT-2 and its successors use, learnt locally (no download): text
is split on GPT-2's pre-tokenisation pattern, each piece's UTF-8 bytes are the
initial alphabet, and ``vocab_size`` tokens are reached by merging the most
frequent pairs of the training documents. Decoding returns the text exactly.
Training is deterministic (counts, then the pair's order, break ties), and the
tokenizer is cached by the training text's hash and the settings
(``cached_bpe``). See docs/architecture.md (the
data package) and docs/benchmarks.md (byte against BPE studies).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from trainables.data.tokenizer import END_OF_DOCUMENT_BYTES, TokenizerConfig, encoded_documents
from trainables.data.tokens import PRIVATE_DIR, PRIVATE_FILE

END_OF_TEXT = "<|endoftext|>"
# The 256 byte tokens and the end-of-document token come first; fewer than this leaves nothing to merge.
MIN_VOCAB_SIZE = 258


class BpeTokenizer:
    """A trained byte-level BPE: ``vocab_size`` ids, ``end_of_document`` the special token that ends a document.

    Example:
        >>> bpe = BpeTokenizer.train(["the cat sat on the mat"] * 50, vocab_size=270)
        >>> tokens, offsets = bpe.encode_documents(["the mat", "a cat"])
        >>> bpe.decode(tokens[offsets[0] : offsets[1] - 1]), int(tokens[offsets[1] - 1]) == bpe.end_of_document
        ('the mat', True)
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self.end_of_document = tokenizer.token_to_id(END_OF_TEXT)
        if self.end_of_document is None:
            raise ValueError(f"a BPE tokenizer for effsweep has the special token {END_OF_TEXT!r}")
        self.vocab_size = tokenizer.get_vocab_size()
        serialised = tokenizer.to_str()
        self.id = f"bpe-v1-{hashlib.sha256(serialised.encode()).hexdigest()[:16]}"

    @classmethod
    def train(cls, documents: Iterable[str], vocab_size: int, length: int | None = None) -> BpeTokenizer:
        """Learn ``vocab_size`` tokens from ``documents`` (``length`` of them, for progress only)."""
        if vocab_size < MIN_VOCAB_SIZE:
            raise ValueError(f"a byte-level BPE needs vocab_size at least {MIN_VOCAB_SIZE}, got {vocab_size}")
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[END_OF_TEXT],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tokenizer.train_from_iterator(documents, trainer, length=length)
        return cls(tokenizer)

    @classmethod
    def load(cls, path: Path) -> BpeTokenizer:
        return cls(Tokenizer.from_file(str(path)))

    def save(self, path: Path) -> None:
        self._tokenizer.save(str(path))

    def encode_documents(self, documents: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Every document's tokens followed by ``end_of_document``, and the documents' offsets (as bytes' pair)."""
        ids = [encoding.ids for encoding in self._tokenizer.encode_batch_fast(list(documents))]
        return encoded_documents(ids, self.end_of_document, self.vocab_size)

    def decode(self, tokens: Sequence[int] | np.ndarray) -> str:
        """Text of a token sequence; end-of-document tokens become newlines."""
        pieces = np.split(np.asarray(tokens), np.flatnonzero(np.asarray(tokens) == self.end_of_document))
        texts = [self._tokenizer.decode(piece[piece != self.end_of_document].tolist()) for piece in pieces]
        return "\n".join(texts)

    def token_bytes(self) -> np.ndarray:
        """The UTF-8 bytes each token id stands for (a byte-level token's string has one character per byte)."""
        lengths = np.zeros(self.vocab_size, dtype=np.int64)
        for token, index in self._tokenizer.get_vocab().items():
            lengths[index] = len(token)
        lengths[self.end_of_document] = END_OF_DOCUMENT_BYTES
        return lengths


def cached_bpe(
    config: TokenizerConfig,
    training_documents: Callable[[], Iterable[str]],
    n_training: int,
    training_key: str,
    cache_dir: Path,
) -> BpeTokenizer:
    """The BPE ``config`` asks for, learnt from ``training_documents()`` (``n_training`` of them), or read from
    ``cache_dir`` where one was learnt on the same training text (named by ``training_key``) and settings."""
    assert config.kind == "bpe" and config.vocab_size is not None
    key = hashlib.sha256(f"{training_key}|bpe-v1|{config.vocab_size}".encode()).hexdigest()[:24]
    path = cache_dir / f"bpe-{key}.json"
    if path.is_file():
        return BpeTokenizer.load(path)
    tokenizer = BpeTokenizer.train(training_documents(), config.vocab_size, length=n_training)
    cache_dir.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    partial = cache_dir / f"bpe-{key}.{os.getpid()}.partial.json"
    tokenizer.save(partial)
    partial.chmod(PRIVATE_FILE)
    partial.replace(path)
    return tokenizer
