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

Run: ``.venv/bin/python benchmarks/record_mpl_curves.py [--model tiny|small|small_3k] [--smoke] [NAME ...]``
(names record only those runs); the last line printed is one JSON object.
``--smoke`` runs ``SMOKE_BASE_STEPS`` steps a base run, on gensim's small
corpus, into a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from corpora import ALPACA, SMALL_CORPUS
from smoke import add_smoke_flag, output_path

from trainables.config import TrialConfig
from trainables.data.prepare import SweepData, prepare_sweep_data
from trainables.loop import train_lm
from trainables.model import MODEL_PRESETS

CURVES = Path(__file__).resolve().parent / "curves"
TOKENS_PER_STEP = 16 * 64
EVAL_EVERY = 100
SMOKE_BASE_STEPS = EVAL_EVERY  # a row a base run, three a long one
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


def _record(model: str, name: str, base_steps: int, out: Path) -> dict[str, Any]:
    torch.set_num_threads(1)
    length, schedule = RUNS[name]
    steps = length * base_steps
    settings = {f"model.{k}": v for k, v in SETUPS[model][0].items()}
    settings.update({"budget.compute": steps * TOKENS_PER_STEP, "batch_size": 16, "eval_every": EVAL_EVERY})
    settings.update({"peak_lr": 3e-3, "schedule.warmup_frac": 0.02, **schedule})
    reports: list[dict[str, Any]] = []
    train_lm(TrialConfig.from_flat(settings), _data, reports.append)
    rows = pd.DataFrame([{"step": r["step"], "lr": r["lr"], "loss": r["val_loss"]} for r in reports])
    rows.to_csv(out / f"{name}.csv", index=False)
    return {"name": name, "rows": len(rows), "final_loss": float(rows["loss"].iloc[-1])}


def main() -> None:
    global _data
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(SETUPS), default="tiny")
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"runs to record (default all): {sorted(RUNS)}")
    add_smoke_flag(parser)
    args = parser.parse_args()
    names = args.names or list(RUNS)
    unknown = sorted(set(names) - set(RUNS))
    if unknown:
        sys.exit(f"unknown run(s) {unknown}; choose from {sorted(RUNS)}")
    _, base_steps, folder = SETUPS[args.model]
    if args.smoke:
        base_steps = SMOKE_BASE_STEPS
    elif not ALPACA.is_file():
        sys.exit(f"{ALPACA} is absent; the recorded curves in {CURVES / folder} stay as they are")
    with tempfile.TemporaryDirectory() as cache:
        _data = prepare_sweep_data(
            SMALL_CORPUS if args.smoke else str(ALPACA), val_fraction=0.1, seed=0, seq_len=64, eval_tokens=16384,
            cache_dir=Path(cache),
        )  # fmt: skip
    longest_first = sorted(names, key=lambda n: -RUNS[n][0])
    runs = {}
    with output_path(CURVES / folder, args.smoke) as out, ProcessPoolExecutor(max_workers=2) as pool:
        out.mkdir(parents=True, exist_ok=True)
        n = len(longest_first)
        for run in pool.map(_record, [args.model] * n, longest_first, [base_steps] * n, [out] * n):
            name = run.pop("name")
            print(f"{args.model} {name}: {run['rows']} rows, final loss {run['final_loss']:.4f}", file=sys.stderr)
            runs[name] = run
    print(json.dumps({"model": args.model, "curves": str(out), "base_steps": base_steps, "runs": runs}))


if __name__ == "__main__":
    main()
