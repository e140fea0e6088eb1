"""The byte-level BPE tokenizer on real text, and bits per byte."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import TINY_32
from trainables.config import TrialConfig
from trainables.data.bpe import BpeTokenizer
from trainables.data.corpus import read_documents, resolve_corpus
from trainables.data.prepare import SweepData, prepare_sweep_data, split_documents
from trainables.data.tokenizer import BYTES, TokenizerConfig
from trainables.loop import FINAL_BITS_PER_BYTE, OBJECTIVE, train_lm

LEE = read_documents(resolve_corpus("gensim:lee_background"))
MADE_UP = "zqxjvbwplkmfth"


@pytest.fixture(scope="module")
def bpe() -> BpeTokenizer:
    return BpeTokenizer.train(LEE, vocab_size=600)


@given(st.text(max_size=200))
@settings(deadline=None, max_examples=200)
def test_bpe_round_trips_any_text(bpe: BpeTokenizer, text: str) -> None:
    tokens, offsets = bpe.encode_documents([text, "and another"])
    assert tokens[offsets[1] - 1] == bpe.end_of_document
    assert bpe.decode(tokens[: offsets[1] - 1]) == text
    assert bpe.decode(tokens) == f"{text}\nand another\n"


def test_bpe_learns_words_and_shortens_real_text(bpe: BpeTokenizer) -> None:
    tokens, _ = bpe.encode_documents(LEE)
    byte_tokens, _ = BYTES.encode_documents(LEE)
    assert bpe.vocab_size == 600 and tokens.dtype == np.uint16
    assert len(tokens) < 0.6 * len(byte_tokens)  # merges learnt from this very text
    assert bpe.token_bytes().sum() > 600  # most tokens stand for more than one byte


_TRAIN_IN_A_PROCESS = """
import sys
from trainables.data.bpe import BpeTokenizer
from trainables.data.corpus import read_documents, resolve_corpus
print(BpeTokenizer.train(read_documents(resolve_corpus("gensim:lee_background")), vocab_size=600).id)
"""


def test_bpe_training_is_identical_across_runs_and_processes(bpe: BpeTokenizer) -> None:
    assert BpeTokenizer.train(LEE, vocab_size=600).id == bpe.id  # the id hashes the whole serialised tokenizer
    other = subprocess.run([sys.executable, "-c", _TRAIN_IN_A_PROCESS], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == bpe.id


def _corpus_with_a_word_in(tmp_path: Path, split: str) -> Path:
    """Lee's documents, one per line, with a made-up word said many times in the validation (or training) ones."""
    train_ids, val_ids = split_documents(len(LEE), 0.1, 0)
    chosen = set((val_ids if split == "validation" else train_ids[: len(val_ids)]).tolist())
    lines = [doc.replace("\n", " ") + f" {MADE_UP}" * 20 * (i in chosen) for i, doc in enumerate(LEE)]
    path = tmp_path / f"{split}.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("split", ["validation", "training"])
def test_bpe_learns_from_the_training_split_only(tmp_path: Path, split: str) -> None:
    corpus = _corpus_with_a_word_in(tmp_path, split)
    prepare_sweep_data(
        str(corpus), val_fraction=0.1, seed=0, seq_len=32, eval_tokens=2048, cache_dir=tmp_path / "cache",
        tokenizer=TokenizerConfig(kind="bpe", vocab_size=600),
    )  # fmt: skip
    [cached] = (tmp_path / "cache").glob("bpe-*.json")
    bpe = BpeTokenizer.load(cached)
    learnt = {bpe.decode([token]) for token in range(bpe.vocab_size)}
    # Said 20 times in each of 30 documents, the word is the commonest thing in the text it is in.
    assert (f" {MADE_UP}" in learnt) == (split == "training")


@pytest.fixture(scope="module")
def lee_bpe(tmp_path_factory: pytest.TempPathFactory) -> SweepData:
    return prepare_sweep_data(
        "gensim:lee_background", val_fraction=0.1, seed=0, seq_len=32, eval_tokens=2048,
        cache_dir=tmp_path_factory.mktemp("cache"), tokenizer=TokenizerConfig(kind="bpe", vocab_size=600),
    )  # fmt: skip


def test_a_sweeps_bpe_is_cached_and_its_validation_bytes_are_those_of_the_text(
    lee_bpe: SweepData, tmp_path: Path
) -> None:
    cache = lee_bpe.train.corpus.path.parent
    [cached] = cache.glob("bpe-*.json")
    bpe = BpeTokenizer.load(cached)
    assert lee_bpe.tokenizer == bpe.id and lee_bpe.vocab_size == 600
    # The windows' targets are one stretch of the validation stream; Lee's text is ASCII, one byte a character.
    targets = lee_bpe.val_windows[:, 1:].ravel()
    assert lee_bpe.val_bytes == len(bpe.decode(targets).encode("utf-8"))
    assert lee_bpe.bits_per_byte(2.0) == pytest.approx(2.0 * targets.size / (lee_bpe.val_bytes * math.log(2)))
    mtime = cached.stat().st_mtime_ns
    again = prepare_sweep_data(
        "gensim:lee_background", val_fraction=0.1, seed=0, seq_len=32, eval_tokens=2048, cache_dir=cache,
        tokenizer=TokenizerConfig(kind="bpe", vocab_size=600),
    )  # fmt: skip
    assert cached.stat().st_mtime_ns == mtime and again.tokenizer == lee_bpe.tokenizer


def test_bytes_give_one_byte_a_token(lee32: SweepData) -> None:
    assert lee32.val_bytes == lee32.val_windows[:, 1:].size
    assert lee32.bits_per_byte(math.log(2)) == pytest.approx(1.0)


def test_a_bpe_trial_reports_bits_per_byte(lee_bpe: SweepData) -> None:
    cfg = TrialConfig.from_flat({**TINY_32, "model.vocab_size": 640, "budget.compute": 20_000, "batch_size": 8,
                                 "eval_every": 20})  # fmt: skip
    reports: list[dict] = []
    train_lm(cfg, lee_bpe, reports.append)
    for report in reports:
        assert report["val_bpb"] == pytest.approx(lee_bpe.bits_per_byte(report["val_loss"]))
    assert reports[-1][FINAL_BITS_PER_BYTE] == pytest.approx(lee_bpe.bits_per_byte(reports[-1][OBJECTIVE]))
    # A BPE token stands for several bytes: the same loss is fewer bits per byte than per token.
    assert reports[-1]["val_bpb"] < reports[-1]["val_loss"] / math.log(2)


def test_a_model_smaller_than_the_vocabulary_is_refused(lee_bpe: SweepData) -> None:
    cfg = TrialConfig.from_flat({**TINY_32, "budget.compute": 20_000, "batch_size": 8})
    with pytest.raises(ValueError, match=r"model\.vocab_size 257 is smaller than the 600 tokens"):
        train_lm(cfg, lee_bpe, lambda report: None)


def test_the_tokenizer_setting_names_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="vocab_size is learnt by bpe only"):
        TokenizerConfig(kind="bytes", vocab_size=512)
    assert TokenizerConfig(kind="bpe").vocab_size == 8192
    assert TokenizerConfig(kind="bpe", vocab_size=1000).model_vocab_size == 1024
