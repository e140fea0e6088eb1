"""Byte-level tokenizer: UTF-8 bytes are tokens 0..255, token 256 ends a document.

Why bytes rather than a trained BPE: nothing to train, download or cache; the
vocabulary is the same for every corpus, so token counts (and therefore the
``compute`` currency) compare across corpora and sweeps; and encoding is a
single vectorised copy, fast enough to tokenise a large corpus once per sweep.
The price is longer sequences than BPE for the same text, which only shifts
the loss scale (nats per byte instead of per word piece).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

TOKENIZER_ID = "bytes-v1"
VOCAB_SIZE = 257
END_OF_DOCUMENT = 256


def encode_documents(documents: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Encode documents into one token array and document offsets.

    Returns ``(tokens, offsets)``: ``tokens`` (uint16) holds every document's
    bytes followed by ``END_OF_DOCUMENT``; document ``i`` is
    ``tokens[offsets[i]:offsets[i + 1]]``.

    Example:
        >>> tokens, offsets = encode_documents(["hi", "é"])
        >>> tokens.tolist(), offsets.tolist()
        ([104, 105, 256, 195, 169, 256], [0, 3, 6])
    """
    encoded = [doc.encode("utf-8") for doc in documents]
    lengths = np.fromiter((len(b) + 1 for b in encoded), dtype=np.int64, count=len(encoded))
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    # A newline joins the documents; it sits exactly where each end-of-document
    # token belongs, so one frombuffer copies the whole corpus.
    joined = b"\n".join(encoded) + b"\n"
    tokens = np.frombuffer(joined, dtype=np.uint8).astype(np.uint16)
    tokens[offsets[1:] - 1] = END_OF_DOCUMENT
    return tokens, offsets


def decode(tokens: Sequence[int] | np.ndarray) -> str:
    """Text of a token sequence; end-of-document tokens become newlines."""
    array = np.asarray(tokens, dtype=np.uint16)
    data = np.where(array == END_OF_DOCUMENT, ord("\n"), array).astype(np.uint8)
    return data.tobytes().decode("utf-8", errors="replace")
