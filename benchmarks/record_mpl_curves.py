"""Record real loss curves for checking the Multi-Power Law: ``benchmarks/curves/mpl*/*.csv``.

Batch 16 x 64 tokens, AdamW at peak 3e-3 with 2% warmup, on Alpaca
(``../shared/data/alpaca_data.json``; none of the runs reads it twice), one
row every 100 steps: ``step,lr,loss`` with the validation loss. Fit set:
constant, cosine, two-step (drop to 0.1 at half); predict set: WSD with
linear and with exponential decay, another two-step (drop to 0.3 at 70%), and
cosine and WSD runs three times longer. Model and length (``--model``):

- ``tiny`` (0.1M parameters), base runs of 6,000 steps (6M tokens), the long
  ones 18,000 (about one pass over Alpaca; 50 to 150 tokens per parameter):
  ``curves/mpl/``, about 25 minutes;
- ``small`` at 64 positions (0.8M parameters), the same lengths (7 to 22
  tokens per parameter, nearer the regime of the law's paper):
  ``curves/mpl_small/``, about 60 minutes;
- ``small_3k``: the same model, base runs of 3,000 steps and long ones of
  9,000: ``curves/mpl_small_3k/``, about 25 minutes.

Run: ``.venv/bin/python benchmarks/record_mpl_curves.py [--model tiny|small|small_3k] [NAME ...]``
(names record only those runs).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from trainables.config import TrialConfig
from trainables.data import SweepData, prepare_sweep_data
from trainables.loop import train_lm
from trainables.model import MODEL_PRESETS

ALPACA = Path(__file__).resolve().parents[2] / "shared" / "data" / "alpaca_data.json"
CURVES = Path(__file__).resolve().parent / "curves"
TOKENS_PER_STEP = 16 * 64
# model name: (model settings, steps of a base run, folder under CURVES)
SETUPS: dict[str, tuple[dict[str, int], int, str]] = {
    "tiny": (MODEL_PRESETS["tiny"], 6000, "mpl"),
    "small": ({**MODEL_PRESETS["small"], "seq_len": 64}, 6000, "mpl_small"),
    "small_3k": ({**MODEL_PRESETS["small"], "seq_len": 64}, 3000, "mpl_small_3k"),
}
# name: (length in base runs, schedule)
RUNS: dict[str, tuple[int, dict[str, Any]]] = {
    "fit_constant": (1, {"schedule.name": "constant"}),
    "fit_cosine": (1, {"schedule.name": "cosine", "schedule.min_lr_frac": 0.0}),
    "fit_two_step": (1, {"schedule.name": "two_step", "schedule.step_frac": 0.5, "schedule.step_factor": 0.1}),
    "predict_wsd_linear": (1, {"schedule.name": "wsd", "schedule.decay_frac": 0.2, "schedule.min_lr_frac": 0.0}),
    "predict_wsd_exp": (1, {"schedule.name": "wsd", "schedule.decay_frac": 0.2, "schedule.decay_shape": "exp"}),
    "predict_two_step_late": (1, {"schedule.name": "two_step", "schedule.step_frac": 0.7, "schedule.step_factor": 0.3}),
    "predict_cosine_3x": (3, {"schedule.name": "cosine", "schedule.min_lr_frac": 0.0}),
    "predict_wsd_3x": (3, {"schedule.name": "wsd", "schedule.decay_frac": 0.2, "schedule.min_lr_frac": 0.0}),
}

_data: SweepData | None = None


def _record(model: str, name: str) -> str:
    torch.set_num_threads(1)
    preset, base_steps, folder = SETUPS[model]
    length, schedule = RUNS[name]
    steps = length * base_steps
    settings = {f"model.{k}": v for k, v in preset.items()}
    settings.update({"budget.compute": steps * TOKENS_PER_STEP, "batch_size": 16, "eval_every": 100})
    settings.update({"peak_lr": 3e-3, "schedule.warmup_frac": 0.02, **schedule})
    reports: list[dict[str, Any]] = []
    train_lm(TrialConfig.from_flat(settings), _data, reports.append)
    rows = pd.DataFrame([{"step": r["step"], "lr": r["lr"], "loss": r["val_loss"]} for r in reports])
    rows.to_csv(CURVES / folder / f"{name}.csv", index=False)
    return f"{model} {name}: {len(rows)} rows, final loss {rows['loss'].iloc[-1]:.4f}"


def main() -> None:
    global _data
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(SETUPS), default="tiny")
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"runs to record (default all): {sorted(RUNS)}")
    args = parser.parse_args()
    names = args.names or list(RUNS)
    unknown = sorted(set(names) - set(RUNS))
    if unknown:
        sys.exit(f"unknown run(s) {unknown}; choose from {sorted(RUNS)}")
    out = CURVES / SETUPS[args.model][2]
    if not ALPACA.is_file():
        sys.exit(f"{ALPACA} is absent; the recorded curves in {out} stay as they are")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as cache:
        _data = prepare_sweep_data(
            str(ALPACA), val_fraction=0.1, seed=0, seq_len=64, eval_tokens=16384, cache_dir=Path(cache)
        )
    longest_first = sorted(names, key=lambda n: -RUNS[n][0])
    with ProcessPoolExecutor(max_workers=2) as pool:
        for line in pool.map(_record, [args.model] * len(longest_first), longest_first):
            print(line)


if __name__ == "__main__":
    main()
