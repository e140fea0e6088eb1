"""Corpora, the tokenisation cache, the validation split and the batcher, on real text."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trainables.data.corpus import CorpusError, read_documents, resolve_corpus
from trainables.data.prepare import prepare_sweep_data, split_documents
from trainables.data.tokenizer import BYTES, ByteTokenizer
from trainables.data.tokens import TokenizedCorpus, corpus_hash, offsets_path, tokenize_cached


@given(st.lists(st.text(), max_size=20))
def test_encoding_round_trips_any_text(documents: list[str]) -> None:
    tokens, offsets = BYTES.encode_documents(documents)
    assert len(offsets) == len(documents) + 1
    for i, doc in enumerate(documents):
        piece = tokens[offsets[i] : offsets[i + 1]]
        assert piece[-1] == BYTES.end_of_document
        assert bytes(piece[:-1].astype(np.uint8)) == doc.encode("utf-8")


def test_bundled_corpus_is_real_text() -> None:
    documents = read_documents(resolve_corpus("gensim:lee_background"))
    assert len(documents) == 300
    assert documents[0].startswith("Hundreds of people have been forced to vacate their homes")


def test_unknown_bundled_corpus_lists_the_known_ones() -> None:
    with pytest.raises(CorpusError, match=r"gensim:nope: no such bundled corpus; known: .*lee_background"):
        resolve_corpus("gensim:nope")


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "holds no documents"),
        (b"\n  \n\t\n", "holds no documents"),
        (b"fine\nstill fine\nbad \xff here\n", r"line 3 is not valid UTF-8 \(byte 0xff\)"),
    ],
    ids=["empty", "blank", "non-utf8"],
)
def test_bad_corpus_names_file_and_line(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "corpus.txt"
    path.write_bytes(content)
    with pytest.raises(CorpusError, match=rf"corpus.txt: {message}"):
        read_documents(path)


def test_missing_or_directory_corpus(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="no such file"):
        read_documents(tmp_path / "absent.txt")
    with pytest.raises(CorpusError, match="is a directory"):
        read_documents(tmp_path)


def test_a_real_latin1_corpus_is_refused_with_its_line() -> None:
    # gensim's lee.cor holds a pound sign in Latin-1: real input this project must reject clearly.
    with pytest.raises(CorpusError, match=r"lee.cor: line 41 is not valid UTF-8 \(byte 0xa3\)"):
        read_documents(resolve_corpus("gensim:lee"))


def test_tokenised_corpus_is_cached_and_reused(tmp_path: Path) -> None:
    documents = read_documents(resolve_corpus("gensim:lee_background"))[:60]
    first, content = tokenize_cached([documents[:25], documents[25:]], tmp_path, BYTES)
    assert content == corpus_hash(documents)
    assert first.path is not None and first.path.suffix == ".npy" and offsets_path(first.path).is_file()
    tokens, offsets = BYTES.encode_documents(documents)
    np.testing.assert_array_equal(first.tokens, tokens)  # chunks tokenise as the whole corpus does
    np.testing.assert_array_equal(first.offsets, offsets)
    assert first.tokens.dtype == np.uint16 and first.offsets.dtype == np.int64
    cached_at = first.path.stat().st_mtime_ns
    second, again = tokenize_cached([documents], tmp_path, BYTES)
    assert (second.path, again) == (first.path, content)
    assert second.path.stat().st_mtime_ns == cached_at  # the cached file is kept, the new one dropped
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.path.name, offsets_path(first.path).name])
    other, _ = tokenize_cached([documents[:-1]], tmp_path, BYTES)
    assert other.path != first.path, "a different corpus must get a different cache key"


def test_a_token_file_holds_uint32_tokens_past_a_uint16_vocabulary(tmp_path: Path) -> None:
    wide = ByteTokenizer()
    wide.vocab_size = 2**16 + 1
    corpus, _ = tokenize_cached([["ab", "c"]], tmp_path, wide)
    assert corpus.tokens.dtype == np.uint32 and BYTES.decode(corpus.tokens) == "ab\nc\n"


def test_a_failed_read_leaves_no_partial_file(tmp_path: Path) -> None:
    def failing() -> Iterator[list[str]]:
        yield ["one document"]
        raise CorpusError("corpus.txt: line 2 is not valid UTF-8 (byte 0xff)")

    with pytest.raises(CorpusError, match="line 2"):
        tokenize_cached(failing(), tmp_path, BYTES)
    assert list(tmp_path.iterdir()) == []


def test_select_concatenates_documents_in_the_given_order() -> None:
    tokens, offsets = BYTES.encode_documents(["ab", "c", "def"])
    corpus = TokenizedCorpus(tokens, offsets)
    assert BYTES.decode(corpus.select(np.array([2, 0]))) == "def\nab\n"
    assert len(corpus.select(np.array([], dtype=np.int64))) == 0


@given(st.integers(2, 500), st.floats(0.01, 0.5), st.integers(0, 2**16))
def test_split_is_disjoint_complete_and_seeded(n: int, fraction: float, seed: int) -> None:
    train, val = split_documents(n, fraction, seed)
    assert len(val) >= 1 and len(train) >= 1
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(n))
    again_train, again_val = split_documents(n, fraction, seed)
    np.testing.assert_array_equal(train, again_train)
    np.testing.assert_array_equal(val, again_val)


def test_validation_windows_are_fixed_and_held_out(tmp_path: Path) -> None:
    kwargs = dict(val_fraction=0.1, seed=0, seq_len=64, eval_tokens=4096, cache_dir=tmp_path)
    a = prepare_sweep_data("gensim:lee_background", **kwargs)
    b = prepare_sweep_data("gensim:lee_background", **kwargs)
    assert a.val_windows.shape == (64, 65)
    np.testing.assert_array_equal(a.val_windows, b.val_windows)
    train_text = BYTES.decode(a.train.tokens)
    val_text = BYTES.decode(a.val_windows[:, :-1].ravel())
    # A held-out sentence of the validation split never appears in training.
    probe = max(val_text.split(". "), key=len)
    assert len(probe) > 40 and probe not in train_text


def test_too_small_validation_split_is_explained(tmp_path: Path) -> None:
    corpus = tmp_path / "short.txt"
    corpus.write_text("one short line\nanother short line\n" * 10)
    expected = r"short\.txt: the validation split holds 15 tokens, fewer than one window of 65"
    with pytest.raises(CorpusError, match=expected):
        prepare_sweep_data(str(corpus), val_fraction=0.05, seed=0, seq_len=64, eval_tokens=8192, cache_dir=tmp_path)
