"""Token files: a tokenised corpus on disk that every process maps instead of reading, and views of its documents.

A token file is a ``.npy`` array of every document's tokens, each document
ending with the end-of-document token, in the corpus's order; its dtype is the
smallest that holds the vocabulary (uint16 for bytes and BPE vocabularies up
to 65,536 tokens, uint32 past), and its name keys the text and the tokenizer.
The documents' offsets (int64, one per document and one more) sit beside it
in ``<name>.offsets.npy``. The files are written as the corpus streams in, a
chunk of documents at a time, and mapped when read, so no process holds the corpus: a trial keeps only the pages of the
windows it reads. ``TokenSpans`` reads chosen documents as one stream without
concatenating them. See docs/architecture.md (the data package) and
docs/benchmarks.md (data at scale).
"""

from __future__ import annotations

import hashlib
import mmap
import os
import secrets
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from trainables.data.corpus import CorpusError
from trainables.data.tokenizer import Tokenizer, token_dtype

# Cached tokens are a reversible copy of a corpus (both tokenizers are byte-level): their owner's alone.
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
OFFSETS_SUFFIX = ".offsets.npy"


def offsets_path(path: Path) -> Path:
    """Where a token file's document offsets are."""
    return path.with_name(path.name.removesuffix(".npy") + OFFSETS_SUFFIX)


class TokenSpans:
    """Spans of a token array read as one stream, the array left in place.

    Spans that follow each other in the array are merged into runs. A window
    of the stream is mapped to array positions by the run that holds its
    first token; only windows that run past that run's end search the run of
    every position. With one run (contiguous documents) it is an offset.

    Given the ``mapping`` of a token file, reading windows leaves no page of
    it in this process's resident memory: the kernel maps a whole page-cache
    folio (up to megabytes) at every page a window touches, so a trial's
    resident size would otherwise grow with every window it has read (the
    pages stay cached, shared by every process that maps the file).

    Example:
        >>> tokens = np.arange(10, dtype=np.uint16)
        >>> spans = TokenSpans(tokens, starts=np.array([6, 0, 2]), lengths=np.array([2, 2, 3]))
        >>> len(spans), spans.windows(np.array([0, 1]), 4).tolist()
        (7, [[6, 7, 0, 1], [7, 0, 1, 2]])
    """

    def __init__(
        self, tokens: np.ndarray, starts: np.ndarray, lengths: np.ndarray, mapping: mmap.mmap | None = None
    ) -> None:
        starts, lengths = np.asarray(starts, dtype=np.int64), np.asarray(lengths, dtype=np.int64)
        self._tokens = tokens
        self._mapping = mapping
        follows = starts[1:] == starts[:-1] + lengths[:-1]
        first = np.flatnonzero(np.concatenate([[True], ~follows])) if len(starts) else np.zeros(0, np.int64)
        run_lengths = np.add.reduceat(lengths, first) if len(first) else np.zeros(0, np.int64)
        self._ends = np.cumsum(run_lengths)  # where each run ends in the stream
        self._shift = starts[first] - (self._ends - run_lengths)  # array position less stream position

    @classmethod
    def whole(cls, tokens: np.ndarray) -> TokenSpans:
        """All of ``tokens`` as one span."""
        return cls(tokens, np.zeros(1, np.int64), np.array([len(tokens)]))

    def __len__(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    @property
    def dtype(self) -> np.dtype:
        return self._tokens.dtype

    def windows(self, starts: np.ndarray, length: int) -> np.ndarray:
        """(rows, ``length``) tokens: the stream from each of ``starts`` on; only those tokens are read."""
        starts = np.asarray(starts, dtype=np.int64)
        positions = starts[:, None] + np.arange(length)
        if len(self._ends) == 1:
            mapped = positions + self._shift[0]
        else:
            run = np.searchsorted(self._ends, starts, side="right")
            mapped = positions + self._shift[run][:, None]
            crossing = starts + length > self._ends[run]
            if crossing.any():
                inside = positions[crossing]
                mapped[crossing] = inside + self._shift[np.searchsorted(self._ends, inside, side="right")]
        rows = self._tokens[mapped]
        if self._mapping is not None and hasattr(mmap, "MADV_DONTNEED"):  # not on Windows
            self._mapping.madvise(mmap.MADV_DONTNEED)  # a file's pages: read again from the cache if needed
        return rows

    def to_array(self) -> np.ndarray:
        """The stream as one array (a copy): for small corpora and tools, not for a trial."""
        if not len(self._ends):
            return np.zeros(0, dtype=self.dtype)
        begins = np.concatenate([[0], self._ends[:-1]])
        return np.concatenate(
            [self._tokens[b + s : e + s] for b, e, s in zip(begins, self._ends, self._shift, strict=True)]
        )


class TokenizedCorpus:
    """Documents as one token array; document ``i`` is ``tokens[offsets[i]:offsets[i+1]]``.

    A corpus opened from a token file (``open``) maps the file at its first
    use, in the process that uses it, and pickles as its path: a trial that
    receives it through Ray's object store receives a few bytes. ``shipped``
    gives one that pickles its arrays instead, for trials that cannot reach
    the file.

    Example:
        >>> corpus = TokenizedCorpus(np.array([104, 105, 256, 33, 256], dtype=np.uint16), np.array([0, 3, 5]))
        >>> corpus.n_documents, corpus.select(np.array([1, 0])).tolist()
        (2, [33, 256, 104, 105, 256])
    """

    def __init__(self, tokens: np.ndarray, offsets: np.ndarray) -> None:
        self._path: Path | None = None
        self._arrays: tuple[np.ndarray, np.ndarray] | None = (tokens, offsets)
        self._mapping: mmap.mmap | None = None  # the token file's, once mapped

    @classmethod
    def open(cls, path: Path) -> TokenizedCorpus:
        """The corpus of the token file at ``path``, mapped at its first use."""
        corpus = cls.__new__(cls)
        corpus._path, corpus._arrays, corpus._mapping = Path(path), None, None
        return corpus

    @property
    def path(self) -> Path | None:
        """The token file, for a corpus read from one."""
        return self._path

    @property
    def tokens(self) -> np.ndarray:
        return self._mapped()[0]

    @property
    def offsets(self) -> np.ndarray:
        return self._mapped()[1]

    @property
    def n_documents(self) -> int:
        return len(self.offsets) - 1

    def spans(self, documents: np.ndarray) -> TokenSpans:
        """The chosen documents' tokens as one stream, in the order given, read in place."""
        documents = np.asarray(documents, dtype=np.int64)
        tokens, offsets = self._mapped()
        starts = offsets[documents]
        return TokenSpans(tokens, starts, offsets[documents + 1] - starts, self._mapping)

    def select(self, documents: np.ndarray) -> np.ndarray:
        """The chosen documents' tokens, concatenated in the order given (a copy)."""
        return self.spans(documents).to_array()

    def shipped(self) -> TokenizedCorpus:
        """This corpus pickling its arrays rather than its path (Ray's object store then carries them)."""
        return TokenizedCorpus(*self._mapped())

    def placed_in(self, folder: Path) -> TokenizedCorpus:
        """This corpus read from ``folder``: its files hard-linked there (copied across filesystems) unless present."""
        if self._path is None:
            raise ValueError("only a corpus read from a token file can be placed in a folder")
        folder.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        target = folder / self._path.name
        # Offsets first: a token file present means its offsets are too.
        for source, placed in ((offsets_path(self._path), offsets_path(target)), (self._path, target)):
            if not placed.is_file():
                _link_or_copy(source, placed)
        return TokenizedCorpus.open(target)

    def __reduce__(self) -> tuple[Any, ...]:
        if self._path is not None:
            return TokenizedCorpus.open, (self._path,)
        return TokenizedCorpus, self._mapped()

    def _mapped(self) -> tuple[np.ndarray, np.ndarray]:
        if self._arrays is None:
            assert self._path is not None
            tokens, self._mapping = _map(self._path)
            self._arrays = (tokens, _map(offsets_path(self._path))[0])
        return self._arrays


@dataclass(frozen=True, eq=False)
class CorpusSplit:
    """Some documents of a corpus, numbered 0..n-1 in the order of ``ids`` (a sweep's training split), read in place.

    Example:
        >>> tokens = np.array([104, 105, 256, 33, 256, 63, 256], dtype=np.uint16)
        >>> split = CorpusSplit(TokenizedCorpus(tokens, np.array([0, 3, 5, 7])), np.array([0, 2]))
        >>> split.n_documents, split.lengths.tolist(), split.select(np.array([1])).tolist()
        (2, [3, 2], [63, 256])
    """

    corpus: TokenizedCorpus
    ids: np.ndarray

    @property
    def n_documents(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per document."""
        offsets = self.corpus.offsets
        return offsets[self.ids + 1] - offsets[self.ids]

    @property
    def n_tokens(self) -> int:
        return int(self.lengths.sum())

    @property
    def tokens(self) -> np.ndarray:
        """Every document's tokens, concatenated (a copy): for small corpora and tools; trials read ``spans``."""
        return self.select(np.arange(self.n_documents))

    def spans(self, documents: np.ndarray) -> TokenSpans:
        """The chosen documents (numbered within the split) as one stream, read in place."""
        return self.corpus.spans(self.ids[documents])

    def select(self, documents: np.ndarray) -> np.ndarray:
        """The chosen documents' tokens, concatenated (a copy)."""
        return self.corpus.select(self.ids[documents])


def corpus_hash(documents: Iterable[str]) -> str:
    """Content hash of documents' text (whatever the tokenizer)."""
    digest = _start_hash()
    _hash_documents(digest, documents)
    return digest.hexdigest()


def count_and_hash(chunks: Iterable[Sequence[str]]) -> tuple[int, str]:
    """The number of documents given a chunk at a time, and their ``corpus_hash``, in one streamed pass."""
    digest = _start_hash()
    count = 0
    for chunk in chunks:
        _hash_documents(digest, chunk)
        count += len(chunk)
    return count, digest.hexdigest()


def tokenize_cached(
    chunks: Iterable[Sequence[str]], cache_dir: Path, tokenizer: Tokenizer
) -> tuple[TokenizedCorpus, str]:
    """Tokenise documents, given a chunk at a time, into the token file cached under their content hash and the
    tokenizer's id.

    Returns the corpus, read from the cached file, and its ``corpus_hash``. The
    tokens stream to a private partial file as the content is hashed; a file
    already cached for that content and tokenizer is kept and the partial one
    dropped. The cache directory is made 0700 and its files are 0600.
    """
    cache_dir.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    digest = _start_hash()
    partial = cache_dir / f"tokens.{os.getpid()}.{secrets.token_hex(4)}.partial.npy"
    with _TokenFileWriter(partial, token_dtype(tokenizer.vocab_size)) as writer:
        for chunk in chunks:
            _hash_documents(digest, chunk)
            writer.append(*tokenizer.encode_documents(chunk))
    content = digest.hexdigest()
    key = hashlib.sha256(f"{content}|{tokenizer.id}".encode()).hexdigest()
    path = cache_dir / f"tokens-{key[:24]}.npy"
    if path.is_file() and offsets_path(path).is_file():
        writer.remove()
    else:
        # Renamed into place, offsets first, so that a concurrent reader never sees half a corpus.
        offsets_path(partial).replace(offsets_path(path))
        partial.replace(path)
    return TokenizedCorpus.open(path), content


class _TokenFileWriter:
    """A token file and its offsets written by appending; the ``.npy`` headers get the lengths when it closes."""

    def __init__(self, path: Path, dtype: np.dtype) -> None:
        self._paths = (path, offsets_path(path))
        self._tokens = _GrowingArray(path, dtype)
        self._offsets = _GrowingArray(self._paths[1], np.dtype("<i8"))
        self._offsets.append(np.zeros(1, np.int64))
        self._end = 0

    def append(self, tokens: np.ndarray, offsets: np.ndarray) -> None:
        """One chunk of documents: its tokens and its offsets from 0 (a tokenizer's ``encode_documents`` pair)."""
        self._tokens.append(tokens)
        self._offsets.append(offsets[1:] + self._end)
        self._end += len(tokens)

    def remove(self) -> None:
        for path in self._paths:
            path.unlink(missing_ok=True)

    def __enter__(self) -> _TokenFileWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._tokens.close()
        self._offsets.close()
        if error is not None:
            self.remove()


class _GrowingArray:
    """A 1-D ``.npy`` file written by appending. NumPy pads a header so that a longer length fits in it."""

    def __init__(self, path: Path, dtype: np.dtype) -> None:
        self._file = os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE), "wb")
        self._dtype = dtype
        self._length = 0
        self._write_header()
        self._data_start = self._file.tell()

    def append(self, values: np.ndarray) -> None:
        self._file.write(np.ascontiguousarray(values, dtype=self._dtype).data)
        self._length += len(values)

    def close(self) -> None:
        if self._file.closed:
            return
        self._file.seek(0)
        self._write_header()
        if self._file.tell() != self._data_start:
            raise RuntimeError(f"{self._file.name}: the .npy header grew with the length {self._length}")
        self._file.close()

    def _write_header(self) -> None:
        header = {"descr": np.lib.format.dtype_to_descr(self._dtype), "fortran_order": False, "shape": (self._length,)}
        np.lib.format.write_array_header_1_0(self._file, header)


def _map(path: Path) -> tuple[np.ndarray, mmap.mmap | None]:
    """The array of a 1-D ``.npy`` file, mapped read-only, and its mapping (None for an empty array).

    The array is a plain one, so that pickling it (``shipped``) carries its data rather than failing on the map.
    """
    try:
        file = path.open("rb")
    except FileNotFoundError:
        raise CorpusError(
            f"{path}: the sweep's token file is missing here; every node must see the sweep's storage (docs/deploy.md)"
        ) from None
    with file:
        np.lib.format.read_magic(file)
        (length,), _, dtype = np.lib.format.read_array_header_1_0(file)
        if not length:
            return np.zeros(0, dtype=dtype), None
        start = file.tell()
        mapping = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    return np.frombuffer(mapping, dtype=dtype, count=length, offset=start), mapping


def _link_or_copy(source: Path, target: Path) -> None:
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    partial.unlink(missing_ok=True)
    try:
        os.link(source, partial)
    except OSError:  # another filesystem, or one without hard links
        with source.open("rb") as src, os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE), "wb") as dst:
            shutil.copyfileobj(src, dst, 16 * 2**20)
    partial.replace(target)


def _start_hash() -> Any:
    return hashlib.sha256(b"text-v1")


def _hash_documents(digest: Any, documents: Iterable[str]) -> None:
    """Each document's UTF-8 bytes and a NUL after it (NUL is one byte in UTF-8, so one join does it)."""
    documents = list(documents)
    if documents:
        digest.update("\0".join(documents).encode("utf-8") + b"\0")
