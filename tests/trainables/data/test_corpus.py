"""Corpus formats and their errors, each naming the file and the line or record."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO
from trainables.data.corpus import CorpusError, CorpusFormat, read_documents

ALPACA_LIKE = [
    {"instruction": "Give three tips for staying healthy.", "input": "", "output": "Eat well. Sleep. Move."},
    {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
]


def test_lines_and_paragraphs(tmp_path: Path) -> None:
    path = tmp_path / "text.txt"
    path.write_text("first line\nsecond line\n\n third  \n\n\nlast\n")
    assert read_documents(path) == ["first line", "second line", "third", "last"]
    assert read_documents(path, CorpusFormat(kind="paragraphs")) == ["first line\nsecond line", "third", "last"]


def test_instruction_records_in_json_and_jsonl(tmp_path: Path) -> None:
    expected = [
        "Give three tips for staying healthy.\nEat well. Sleep. Move.",
        "Translate to French.\nGood morning\nBonjour",
    ]
    as_json = tmp_path / "data.json"
    as_json.write_text(json.dumps(ALPACA_LIKE, indent=4))
    assert read_documents(as_json) == expected  # format and fields from the extension
    as_jsonl = tmp_path / "data.jsonl"
    as_jsonl.write_text("\n".join(json.dumps(r) for r in ALPACA_LIKE) + "\n")
    assert read_documents(as_jsonl) == expected
    assert read_documents(as_jsonl, CorpusFormat(fields=("output",))) == ["Eat well. Sleep. Move.", "Bonjour"]


def test_parquet_text_column(tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    pq.write_table(pa.table({"text": ["one", " ", "two"], "n": [1, 2, 3]}), path)
    assert read_documents(path) == ["one", "two"]
    with pytest.raises(CorpusError, match=r"data.parquet: has no column 'body' \(columns: text, n\)"):
        read_documents(path, CorpusFormat(fields=("body",)))
    with pytest.raises(CorpusError, match=r"data\.parquet: column 'n' is int64, not text"):
        read_documents(path, CorpusFormat(fields=("n",)))


def test_the_real_alpaca_file_reads_when_present() -> None:
    path = REPO.parent / "shared" / "data" / "alpaca_data.json"
    if not path.is_file():
        pytest.skip(f"{path} is absent; the project never requires ../shared")
    documents = read_documents(path)
    assert len(documents) == 52002
    assert documents[0].startswith("Give three tips for staying healthy.")


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("bad.json", '[{"instruction": "a",\n "output": }]', r"bad.json: line 2 is not valid JSON"),
        ("obj.json", '{"instruction": "a"}', r"obj.json: must hold a JSON array of records, not a dict"),
        ("bad.jsonl", '{"instruction": "a", "input": "", "output": "b"}\nnot json\n', r"bad.jsonl: line 2 is not"),
        ("missing.json", json.dumps([ALPACA_LIKE[0], {"instruction": "x"}]), r"record 2 has no field 'input'"),
        ("number.jsonl", '{"instruction": 3, "input": "", "output": ""}', r"line 1 field 'instruction' is int"),
        ("list.json", "[[1, 2]]", r"list.json: record 1 is a list, not a record"),
        ("latin1.txt", "caf\xe9\n".encode("latin-1"), r"latin1.txt: line 1 is not valid UTF-8 \(byte 0xe9\)"),
        ("empty.jsonl", "", r"empty.jsonl: holds no documents"),
    ],
)
def test_bad_corpus_names_file_and_place(tmp_path: Path, name: str, content: str | bytes, message: str) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(CorpusError, match=message):
        read_documents(path)


def test_unreadable_parquet_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(CorpusError, match=r"broken\.parquet: not a readable Parquet file"):
        read_documents(path)


def test_default_fields_match_in_any_capitalisation_and_only_those_present(tmp_path: Path) -> None:
    path = tmp_path / "WizardLM_testset.jsonl"  # the shape of WizardLM's test set: one capitalised text field
    records = [
        {"idx": 1, "Skill": "Math", "Difficulty": 1, "Instruction": "What is the value of 2+2?"},
        {"idx": 2, "Skill": "Code Generation", "Difficulty": 4, "Instruction": "Reverse a linked list in C."},
    ]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    assert read_documents(path) == ["What is the value of 2+2?", "Reverse a linked list in C."]
    with pytest.raises(CorpusError, match=r"line 1 has no field 'instruction' \(fields: idx, Skill, Difficulty"):
        read_documents(path, CorpusFormat(fields=("instruction",)))  # given fields match exactly
    assert read_documents(path, CorpusFormat(fields=("Skill", "Instruction")))[0] == "Math\nWhat is the value of 2+2?"


def test_records_without_any_default_field_ask_for_fields(tmp_path: Path) -> None:
    path = tmp_path / "chat.json"
    path.write_text(json.dumps([{"prompt": "hi", "response": "hello"}]))
    with pytest.raises(CorpusError, match=r"chat\.json: record 1 has none of the fields instruction, input, output"):
        read_documents(path)
    assert read_documents(path, CorpusFormat(fields=("prompt", "response"))) == ["hi\nhello"]


def test_parquet_default_column_in_any_capitalisation(tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    pq.write_table(pa.table({"Text": ["one", "two"]}), path)
    assert read_documents(path) == ["one", "two"]


def test_a_binary_file_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(64) + b"some text after the header\n")
    with pytest.raises(CorpusError, match=r"model\.bin: not a text file \(a NUL byte at offset 7\)"):
        read_documents(path)
    parquet_named_txt = tmp_path / "rows.txt"  # Parquet read as lines: refused, not taken as text
    pq.write_table(pa.table({"text": ["one"]}), parquet_named_txt)
    with pytest.raises(CorpusError, match=r"rows\.txt: not a text file"):
        read_documents(parquet_named_txt)
    assert read_documents(parquet_named_txt, CorpusFormat(kind="parquet")) == ["one"]
