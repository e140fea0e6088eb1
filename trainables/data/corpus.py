"""Reading corpora into documents: plain text, instruction data (JSON/JSONL) and Parquet.

Formats (``CorpusFormat.kind``):

- ``lines``: one document per non-blank line (gensim's ``.cor`` files, most text dumps);
- ``paragraphs``: documents separated by blank lines, the lines of one joined by newlines;
- ``json``: a JSON array of records (Stanford Alpaca's ``alpaca_data.json``);
- ``jsonl``: one JSON record per line;
- ``parquet``: a Parquet file, records being its rows.

A record's document is the non-empty values of ``fields`` joined by newlines,
so an Alpaca record becomes instruction, input (when present) and output.
Fields given explicitly are matched exactly. The default fields (``instruction``,
``input``, ``output`` for JSON and JSONL, ``text`` for Parquet) are matched in any
capitalisation, and for JSON and JSONL only those the first record has are used,
so a set with one ``Instruction`` field (WizardLM's test set) reads as it is;
every later record must have the same fields.
``auto`` picks by extension: ``.json``, ``.jsonl``, ``.parquet``, else ``lines``.
A file that is not text (a NUL byte near its start, or bytes that are not
UTF-8) is refused unless it is read as Parquet.

``document_chunks`` hands the documents over a chunk at a time, reading
text, JSONL and Parquet a block at a time, so preparing a corpus of any size
holds only a few megabytes of it (a JSON array is one value, read whole).

Every problem names the file and, where it applies, the line or the record
(1-based), so a user can open the file at the spot.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

BUILTIN_PREFIX = "gensim:"
RECORD_KINDS = ("json", "jsonl", "parquet")
DEFAULT_FIELDS = {
    "json": ("instruction", "input", "output"),
    "jsonl": ("instruction", "input", "output"),
    "parquet": ("text",),
}
# How much of a file is searched for a NUL byte, the mark of a binary file (git looks as far).
BINARY_PROBE = 8000
# Reading in blocks keeps a process's memory flat whatever the corpus's size. A megabyte makes Python's
# per-block work negligible against the decoding and keeps the block's transient copies small.
BLOCK_BYTES = 2**20
CHUNK_CHARS = 2**20


class CorpusError(ValueError):
    """A corpus that cannot be used; the message names the file and, where it applies, the line or record."""


class CorpusFormat(BaseModel):
    """How to read a corpus file into documents."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["auto", "lines", "paragraphs", "json", "jsonl", "parquet"] = "auto"
    fields: tuple[str, ...] | None = Field(
        None, min_length=1, description="record fields joined into a document (json, jsonl, parquet)"
    )

    def resolved(self, path: Path) -> CorpusFormat:
        """This format with ``auto`` and the default fields filled in for ``path``."""
        kind = self.kind
        if kind == "auto":
            kind = {".json": "json", ".jsonl": "jsonl", ".parquet": "parquet"}.get(path.suffix.lower(), "lines")
        return CorpusFormat(kind=kind, fields=self.fields or DEFAULT_FIELDS.get(kind))


def gensim_corpus_dir() -> Path:
    """Folder of the real text corpora that the ``gensim`` package ships for its tests."""
    import gensim

    return Path(gensim.__file__).parent / "test" / "test_data"


def resolve_corpus(source: str) -> Path:
    """Path of a corpus given as a file path or as ``gensim:<name>`` (a bundled ``<name>.cor``)."""
    if not source.startswith(BUILTIN_PREFIX):
        return Path(source)
    name = source[len(BUILTIN_PREFIX) :]
    path = gensim_corpus_dir() / f"{name}.cor"
    if not path.is_file():
        known = sorted(p.stem for p in gensim_corpus_dir().glob("*.cor"))
        raise CorpusError(f"{source}: no such bundled corpus; known: {', '.join(known)}")
    return path


def read_documents(path: Path, corpus_format: CorpusFormat | None = None) -> list[str]:
    """The documents of a corpus file, in file order, stripped, empty ones dropped."""
    return [document for chunk in document_chunks(path, corpus_format) for document in chunk]


def document_chunks(
    path: Path, corpus_format: CorpusFormat | None = None, chunk_chars: int | None = None
) -> Iterator[list[str]]:
    """The documents of ``read_documents``, in lists of about ``chunk_chars`` characters, read as they are needed.

    Text, JSONL and Parquet stream through, a block of the file at a time, so
    a corpus of any size is never held whole; a JSON array is one value and
    is read whole.
    """
    chunk: list[str] = []
    size = 0
    found = False
    for document in _documents(path, corpus_format or CorpusFormat()):
        if not document:
            continue
        chunk.append(document)
        size += len(document)
        if size >= (chunk_chars or CHUNK_CHARS):
            yield chunk
            chunk, size, found = [], 0, True
    if chunk:
        yield chunk
    elif not found:
        raise CorpusError(f"{path}: holds no documents (the file is empty or blank)")


def _documents(path: Path, given: CorpusFormat) -> Iterator[str]:
    """Every document of the file, stripped, empty ones included."""
    fmt = given.resolved(path)
    fields = _Fields(fmt.fields or (), exact=given.fields is not None)
    if fmt.kind == "parquet":
        yield from _parquet_documents(path, fields)
    elif fmt.kind == "json":
        yield from _json_documents(path, _read_text(path), fields)
    elif fmt.kind == "jsonl":
        yield from _records_documents(path, _jsonl_records(path, _lines(path)), fields)
    elif fmt.kind == "paragraphs":
        yield from (block.strip() for block in _paragraphs(_lines(path)))
    else:
        yield from (line.strip() for line in _lines(path))


def _lines(path: Path) -> Iterator[str]:
    """The lines of a text file as ``str.splitlines`` cuts its whole text, decoded a block at a time."""
    for text in _text_blocks(path):
        yield from text.splitlines()


def _text_blocks(path: Path) -> Iterator[str]:
    """A UTF-8 text file decoded in blocks of whole lines (cut after a newline, which no multi-byte character holds)."""
    with _open(path) as file:
        head = file.read(BINARY_PROBE)
        _refuse_binary(path, head)
        pending, line = [head], 1
        while True:
            block = file.read(BLOCK_BYTES)
            cut = block.rfind(b"\n") + 1
            if block and not cut:
                pending.append(block)  # a line longer than a block: read on to its end
                continue
            pending.append(block[:cut] if block else b"")
            raw = b"".join(pending)
            pending = [block[cut:]] if block else []
            yield _decode(path, raw, line)
            line += raw.count(b"\n")
            if not block:
                return


def _decode(path: Path, raw: bytes, first_line: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = first_line + raw.count(b"\n", 0, exc.start)
        raise CorpusError(f"{path}: line {line} is not valid UTF-8 (byte 0x{raw[exc.start]:02x})") from None


def _refuse_binary(path: Path, head: bytes) -> None:
    nul = head.find(b"\0", 0, BINARY_PROBE)
    if nul >= 0:
        raise CorpusError(
            f"{path}: not a text file (a NUL byte at offset {nul}); a corpus is UTF-8 text, JSON, JSONL or Parquet"
        )


def _read_text(path: Path) -> str:
    with _open(path) as file:
        raw = file.read()
    _refuse_binary(path, raw[:BINARY_PROBE])
    return _decode(path, raw, 1)


def _open(path: Path) -> BinaryIO:
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise CorpusError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CorpusError(f"{path}: is a directory, not a corpus file") from None
    except OSError as exc:
        raise CorpusError(f"{path}: cannot be read ({exc.strerror})") from None


def _paragraphs(lines: Iterable[str]) -> Iterator[str]:
    block: list[str] = []
    for line in lines:
        if line.strip():
            block.append(line.rstrip())
        elif block:
            yield "\n".join(block)
            block = []
    if block:
        yield "\n".join(block)


@dataclass(frozen=True)
class _Fields:
    """The record fields joined into a document, and whether their names must match exactly."""

    names: tuple[str, ...]
    exact: bool

    def keys_in(self, keys: Collection[str]) -> tuple[str, ...]:
        """The keys these fields name: the names themselves when exact, else those present in any capitalisation."""
        if self.exact:
            return self.names
        folded = {key.casefold(): key for key in keys}
        found = (name if name in keys else folded.get(name.casefold()) for name in self.names)
        return tuple(key for key in found if key is not None)


def _json_documents(path: Path, text: str, fields: _Fields) -> Iterator[str]:
    try:
        records = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CorpusError(f"{path}: line {exc.lineno} is not valid JSON ({exc.msg})") from None
    if not isinstance(records, list):
        raise CorpusError(f"{path}: must hold a JSON array of records, not a {type(records).__name__}")
    return _records_documents(path, ((f"record {i}", record) for i, record in enumerate(records, 1)), fields)


def _jsonl_records(path: Path, lines: Iterable[str]) -> Iterator[tuple[str, Any]]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield f"line {number}", json.loads(line)
        except json.JSONDecodeError as exc:
            raise CorpusError(f"{path}: line {number} is not valid JSON ({exc.msg})") from None


def _records_documents(path: Path, records: Iterable[tuple[str, Any]], fields: _Fields) -> Iterator[str]:
    """One document per record; the first record fixes which keys every record must have."""
    keys: tuple[str, ...] | None = None
    for where, record in records:
        if not isinstance(record, dict):
            raise CorpusError(f"{path}: {where} is a {type(record).__name__}, not a record (JSON object)")
        if keys is None:
            keys = fields.keys_in(record)
            if not keys:
                raise CorpusError(
                    f"{path}: {where} has none of the fields {', '.join(fields.names)} in any capitalisation "
                    f"(fields: {', '.join(map(str, record))}); name the fields to join"
                )
        yield _record_document(path, where, record, keys)


def _record_document(path: Path, where: str, record: dict[str, Any], keys: Sequence[str]) -> str:
    parts = []
    for key in keys:
        if key not in record:
            raise CorpusError(f"{path}: {where} has no field '{key}' (fields: {', '.join(map(str, record))})")
        value = record[key]
        if not isinstance(value, str):
            raise CorpusError(f"{path}: {where} field '{key}' is {type(value).__name__}, not text")
        if value.strip():
            parts.append(value.strip())
    return "\n".join(parts)


def _parquet_documents(path: Path, fields: _Fields) -> Iterator[str]:
    _open(path).close()  # the same clear errors for a missing file or a directory
    try:
        file = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise CorpusError(f"{path}: not a readable Parquet file ({exc})") from None
    schema = file.schema_arrow
    names = fields.keys_in(schema.names) or fields.names
    for field in names:
        if field not in schema.names:
            raise CorpusError(f"{path}: has no column '{field}' (columns: {', '.join(schema.names)})")
        kind = schema.field(field).type
        if not pa.types.is_string(kind) and not pa.types.is_large_string(kind):
            raise CorpusError(f"{path}: column '{field}' is {kind}, not text")
    for batch in file.iter_batches(columns=list(names)):
        columns = [batch.column(field).to_pylist() for field in names]
        yield from ("\n".join(v.strip() for v in values if v and v.strip()) for values in zip(*columns, strict=True))
