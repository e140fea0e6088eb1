"""Every schedule and step-size rule at its recommended defaults, at equal compute.

The default model (``small``), batch 16, on a real corpus: Alpaca
(``../shared/data/alpaca_data.json``) when present, else gensim's
``lee_background``. Each run gets the same compute (``--compute`` tokens'
worth of forward and backward work; a line search's extra forward passes and
vSGD's second gradient come out of it). Two runs at a time, one thread each.

Recommended defaults: AdamW at peak 3e-3 with each schedule at its defaults;
schedule-free AdamW at 3e-3 (the package's 2.5e-3, rounded); SGD with
momentum and schedule-free SGD at 0.3 (sizeable rates for SGD on a small
transformer); the line search from 1.0 (its authors' start); vSGD needs none;
delta-bar-delta with and without retraction on AdamW's direction at 3e-3;
AutoLRS at its defaults (rates searched in [1e-4, 1e-2]).
``--dbd-study`` runs the two delta-bar-delta rules at batch sizes 4, 16 and
64 instead (the same compute, so 16, 4 and 1 times the steps of batch 64).

Run: ``.venv/bin/python benchmarks/schedules.py [--smoke]`` (about 15 minutes);
the last line printed is one JSON object, runs sorted by final validation loss.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch
from corpora import default_corpus, prepare_default_model_data
from smoke import SMOKE_MODEL, add_smoke_flag

from trainables.config import MIN_STEPS, TrialConfig
from trainables.data.prepare import SweepData
from trainables.loop import train_lm
from trainables.model import MODEL_PRESETS

SCHEDULES = ("constant", "cosine", "wsd", "power", "inverse_power", "one_cycle", "explore_converge")
RUNS: list[dict[str, Any]] = [{"optimizer.name": "adamw", "schedule.name": s, "peak_lr": 3e-3} for s in SCHEDULES]
RUNS += [
    {"optimizer.name": "adamw", "schedule.name": "wsd", "schedule.decay_shape": "exp", "peak_lr": 3e-3},
    {"optimizer.name": "sgd", "schedule.name": "cosine", "peak_lr": 0.3},
    {"optimizer.name": "schedule_free_adamw", "peak_lr": 3e-3},
    {"optimizer.name": "schedule_free_sgd", "peak_lr": 0.3},
    {"optimizer.name": "armijo_sgd"},
    {"optimizer.name": "vsgd"},
    {"optimizer.name": "dbd", "peak_lr": 3e-3},
    {"optimizer.name": "dbd_retract", "peak_lr": 3e-3},
    {"optimizer.name": "autolrs"},
]
# --dbd-study: delta-bar-delta with and without retraction where minibatch noise differs (the same compute).
DBD_STUDY = [
    {"optimizer.name": rule, "peak_lr": 3e-3, "batch_size": batch}
    for batch in (4, 16, 64)
    for rule in ("dbd", "dbd_retract")
]

_data: SweepData | None = None  # inherited by the worker processes


def _label(settings: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in settings.items())


def _run(settings: dict[str, Any], compute: float, model: str) -> dict[str, Any]:
    torch.set_num_threads(1)
    base = {f"model.{k}": v for k, v in MODEL_PRESETS[model].items()}
    base.update({"budget.compute": compute, "batch_size": 16, "eval_every": 50})
    reports: list[dict[str, Any]] = []
    started = time.perf_counter()
    outcome = train_lm(TrialConfig.from_flat({**base, **settings}), _data, reports.append)
    last = reports[-1]
    return {
        "run": _label(settings),
        "status": outcome.status,
        "final_val_loss": last.get("final_val_loss", float("nan")),
        "final_val_bpb": last.get("final_val_bpb", float("nan")),
        "steps": last["step"],
        "compute": last["compute"],
        "lr_last": last["lr"],
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    global _data
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compute", type=float, default=1.5e6)
    parser.add_argument("--dbd-study", action="store_true", help="dbd and dbd_retract at batch sizes 4, 16 and 64")
    parser.add_argument(
        "--only", action="append", default=[], metavar="PREFIX",
        help="run only the runs whose label (as printed, e.g. 'optimizer.name=dbd') starts with PREFIX; repeatable",
    )  # fmt: skip
    add_smoke_flag(parser)
    args = parser.parse_args()
    model = SMOKE_MODEL if args.smoke else "small"
    seq_len = MODEL_PRESETS[model]["seq_len"]
    compute = 2 * MIN_STEPS * 16 * seq_len if args.smoke else args.compute  # vSGD's steps cost two
    corpus = default_corpus(args.smoke)
    _data = prepare_default_model_data(corpus, seq_len)
    chosen = DBD_STUDY if args.dbd_study else RUNS
    runs = [r for r in chosen if not args.only or _label(r).startswith(tuple(args.only))]
    if not runs:
        parser.error(f"--only {args.only}: no run's label starts with that")
    with ProcessPoolExecutor(max_workers=2) as pool:  # fork: workers share the prepared data
        results = list(pool.map(_run, runs, [compute] * len(runs), [model] * len(runs)))
    results.sort(key=lambda r: r["final_val_loss"])
    for r in results:
        print(f"{r['final_val_loss']:.4f}  {r['run']}  ({r['steps']} steps, {r['seconds']:.0f} s)", file=sys.stderr)
    print(json.dumps({"corpus": Path(corpus).name, "compute": compute, "runs": results}))


if __name__ == "__main__":
    main()
