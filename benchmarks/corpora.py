"""The corpus the training benchmarks read: Alpaca when ``../shared`` has it, else one gensim ships."""

from __future__ import annotations

import tempfile
from pathlib import Path

from trainables.data.prepare import SweepData, prepare_sweep_data
from trainables.data.tokenizer import TokenizerConfig

ALPACA = Path(__file__).resolve().parents[2] / "shared" / "data" / "alpaca_data.json"
SMALL_CORPUS = "gensim:lee_background"  # 300 short news texts: always present, and read in seconds


def default_corpus(smoke: bool = False) -> str:
    """Alpaca when present; the small corpus without it, and in a smoke run whatever is present."""
    return str(ALPACA) if ALPACA.is_file() and not smoke else SMALL_CORPUS


def prepare_default_model_data(corpus: str, seq_len: int = 128, tokenizer: TokenizerConfig | None = None) -> SweepData:
    """``corpus`` tokenised for the default model (128-token windows, 16k validation tokens), cached nowhere."""
    with tempfile.TemporaryDirectory() as cache:
        return prepare_sweep_data(
            corpus, val_fraction=0.1, seed=0, seq_len=seq_len, eval_tokens=16384, cache_dir=Path(cache),
            tokenizer=tokenizer,
        )  # fmt: skip
