"""Token files at scale: streamed reading, views over documents that equal the old copies, small pickles."""

from __future__ import annotations

import json
import mmap
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from memory import status_mib

from tests.conftest import REPO
from trainables.data import corpus as corpus_module
from trainables.data.corpus import CorpusError, CorpusFormat, document_chunks, gensim_corpus_dir, read_documents
from trainables.data.prepare import SweepData
from trainables.data.tokenizer import BYTES
from trainables.data.tokens import TokenizedCorpus, TokenSpans, tokenize_cached
from trainables.patch import PatchBatcher


def _concatenated(tokens: np.ndarray, offsets: np.ndarray, documents: np.ndarray) -> np.ndarray:
    """The selected documents' tokens as ``TokenizedCorpus.select`` built them before token files: one int64 index
    per selected token, then a gather."""
    if len(documents) == 0:
        return np.zeros(0, dtype=tokens.dtype)
    starts, ends = offsets[documents], offsets[documents + 1]
    lengths = ends - starts
    within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return tokens[np.repeat(starts, lengths) + within]


@st.composite
def _corpus_and_choice(draw: st.DrawFn) -> tuple[TokenizedCorpus, np.ndarray]:
    lengths = draw(st.lists(st.integers(1, 30), min_size=1, max_size=40))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    tokens = np.arange(offsets[-1], dtype=np.uint16)  # every token names its place in the file
    chosen = draw(st.lists(st.integers(0, len(lengths) - 1), min_size=1, max_size=len(lengths), unique=True))
    if draw(st.booleans()):
        chosen = sorted(chosen)  # a trial's documents come in index order, with runs of neighbours
    return TokenizedCorpus(tokens, offsets), np.array(chosen, dtype=np.int64)


@settings(max_examples=200, deadline=None)
@given(_corpus_and_choice(), st.integers(1, 50), st.data())
def test_the_view_reads_the_windows_the_concatenation_held(
    case: tuple[TokenizedCorpus, np.ndarray], length: int, data: st.DataObject
) -> None:
    corpus, documents = case
    old = _concatenated(corpus.tokens, corpus.offsets, documents)
    spans = corpus.spans(documents)
    assert len(spans) == len(old)
    np.testing.assert_array_equal(spans.to_array(), old)
    np.testing.assert_array_equal(corpus.select(documents), old)
    if length > len(old):
        return
    starts = np.array(data.draw(st.lists(st.integers(0, len(old) - length), min_size=1, max_size=12)))
    np.testing.assert_array_equal(spans.windows(starts, length), old[starts[:, None] + np.arange(length)])


@pytest.mark.parametrize("k", [1, 3])
def test_batches_from_the_view_are_bit_identical_to_batches_from_the_concatenation(k: int, lee32: SweepData) -> None:
    documents = np.arange(lee32.train.n_documents)[::2]  # runs of neighbours broken everywhere
    split = lee32.train
    old = _concatenated(split.corpus.tokens, split.corpus.offsets, split.ids[documents])
    settings = dict(seq_len=32, patch_size=k, batch_size=8, seed=5)
    from_view, from_copy = PatchBatcher(split.spans(documents), **settings), PatchBatcher(old, **settings)
    for step in range(60):
        if step < 20:
            assert torch.equal(from_view.patch_batch(), from_copy.patch_batch())
        else:
            assert torch.equal(from_view.token_batch(), from_copy.token_batch())


def test_sweep_data_pickles_as_a_path_and_maps_the_file_where_it_is_read(lee32: SweepData, tmp_path: Path) -> None:
    pickled = pickle.dumps(lee32.train)
    # The training documents' numbers and the file's path: no token travels.
    assert len(pickled) < 8 * lee32.train.n_documents + 1024 < lee32.train_tokens
    received = pickle.loads(pickled)
    tokens = received.corpus.tokens
    assert isinstance(tokens.base.obj, mmap.mmap) and not tokens.flags.writeable  # mapped here, read-only
    np.testing.assert_array_equal(received.tokens, lee32.train.tokens)
    shipped = pickle.dumps(lee32.shipped().train)  # what Ray's object store carries where no storage is shared
    assert len(shipped) > 2 * len(lee32.train.corpus.tokens)
    np.testing.assert_array_equal(pickle.loads(shipped).tokens, lee32.train.tokens)


def test_a_trial_that_cannot_see_the_token_file_says_so(lee32: SweepData, tmp_path: Path) -> None:
    placed = lee32.placed_in(tmp_path / "_data")
    pickled = pickle.dumps(placed)
    for path in (tmp_path / "_data").iterdir():
        path.unlink()
    with pytest.raises(CorpusError, match=r"_data/tokens-\w+\.npy: the sweep's token file is missing here"):
        pickle.loads(pickled).train.spans(np.arange(3))


TEXT = "first\r\nsecond line é\n\n  third\u2028fourth  \rfifth\n" + "x" * 50 + "\n\n\nlast ü"


@pytest.mark.parametrize("kind", ["lines", "paragraphs"])
def test_text_read_in_small_blocks_gives_the_documents_of_the_whole_text(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8", newline="")
    whole = read_documents(path, CorpusFormat(kind=kind))
    if kind == "lines":
        assert whole == [line.strip() for line in TEXT.splitlines() if line.strip()]
    monkeypatch.setattr(corpus_module, "BLOCK_BYTES", 3)  # blocks end inside lines and characters
    chunks = list(document_chunks(path, CorpusFormat(kind=kind), chunk_chars=10))
    assert len(chunks) > 1 and [d for chunk in chunks for d in chunk] == whole


def test_streamed_errors_still_name_their_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(corpus_module, "BLOCK_BYTES", 4)
    text = tmp_path / "corpus.txt"
    text.write_bytes(b"fine\nstill fine\nmore\nbad \xff here\n")
    with pytest.raises(CorpusError, match=r"corpus\.txt: line 4 is not valid UTF-8 \(byte 0xff\)"):
        read_documents(text)
    records = tmp_path / "data.jsonl"
    records.write_text(json.dumps({"text": "a"}) + "\n\n" + json.dumps({"text": "b"}) + "\n{oops\n")
    with pytest.raises(CorpusError, match=r"data\.jsonl: line 4 is not valid JSON"):
        read_documents(records, CorpusFormat(fields=("text",)))


def _preparation_growth_mib(corpus: Path, cache: Path) -> float:
    """How much a fresh process's peak memory grows while it prepares ``corpus``."""
    script = (
        "import sys; from pathlib import Path; sys.path.insert(0, 'benchmarks'); from memory import peak_rss_mib;"
        "from trainables.data.prepare import prepare_sweep_data; before = peak_rss_mib();"
        f"prepare_sweep_data({str(corpus)!r}, val_fraction=0.1, seed=0, seq_len=64, eval_tokens=4096,"
        f" cache_dir=Path({str(cache)!r})); print(peak_rss_mib() - before)"
    )
    return float(
        subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, check=True).stdout
    )


def test_preparing_a_corpus_takes_memory_that_does_not_grow_with_it(tmp_path: Path) -> None:
    lines = (gensim_corpus_dir() / "lee_background.cor").read_text().splitlines()
    rng = np.random.default_rng(0)
    growth = []
    for megabytes in (8, 40):
        corpus = tmp_path / f"corpus-{megabytes}.txt"
        with corpus.open("w") as out:
            while out.tell() < megabytes * 2**20:
                out.write("\n".join(rng.permutation(lines)) + "\n")
        growth.append(_preparation_growth_mib(corpus, tmp_path / "cache"))
    assert growth[1] < growth[0] + 8, growth  # 32 MB more text, a few MB more memory (per-document numbers)


def test_reading_windows_leaves_the_token_files_pages_out_of_resident_memory(tmp_path: Path) -> None:
    documents = ["".join(chr(97 + (i * 7 + j) % 26) for j in range(4000)) for i in range(16)]
    corpus, _ = tokenize_cached([documents] * 1000, tmp_path, BYTES)  # 64M tokens, 128 MB
    spans = corpus.spans(np.arange(corpus.n_documents))
    starts = np.random.default_rng(0).integers(0, len(spans) - 1000, size=(200, 16))
    before = status_mib("VmRSS")
    for rows in starts:
        spans.windows(rows, 1000)
    assert status_mib("VmRSS") - before < 16  # without the release, up to a page-cache folio (megabytes) a window


def test_spans_of_no_document_are_empty() -> None:
    spans = TokenSpans(np.arange(5, dtype=np.uint16), np.zeros(0, np.int64), np.zeros(0, np.int64))
    assert len(spans) == 0 and spans.to_array().dtype == np.uint16
    with pytest.raises(ValueError, match="fewer than one sample"):
        PatchBatcher(spans, seq_len=2, patch_size=1, batch_size=1, seed=0)
