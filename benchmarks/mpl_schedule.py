"""The MPL-optimal schedule against cosine and WSD, at equal compute, on the default model.

Three runs (constant, cosine to zero, two-step) of the default model
(``small``, batch 16, AdamW at peak 3e-3, 2% warmup) on Alpaca
(``../shared/data/alpaca_data.json``; else gensim's ``lee_background``) give
the curves the law is fitted to (shared L0 and A, as ``effsweep mpl fit``);
``mpl_optimal`` built from that fit then trains against cosine and WSD
(linear decay to zero over the last 20%) at the same compute. Each run's
final loss is reported with the law's prediction of it.

Run: ``.venv/bin/python benchmarks/mpl_schedule.py [--compute 1.5e6] [--model small]
[--min-step 0] [--smoke]`` (about 10 minutes at the defaults); the last line printed
is one JSON object. ``--smoke`` runs ``SMOKE_STEPS`` steps of ``smoke.SMOKE_MODEL``.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from corpora import default_corpus, prepare_default_model_data
from smoke import SMOKE_MODEL, add_smoke_flag

from orchestrator.curves import Curve
from orchestrator.mpl.fit import fit_mpl
from trainables.config import TrialConfig
from trainables.data.prepare import SweepData
from trainables.loop import train_lm
from trainables.model import MODEL_PRESETS

FIT_RUNS = {
    "constant": {"schedule.name": "constant"},
    "cosine": {"schedule.name": "cosine", "schedule.min_lr_frac": 0.0},
    "two_step": {"schedule.name": "two_step", "schedule.step_frac": 0.5, "schedule.step_factor": 0.1},
}
COMPARED = {
    "cosine": FIT_RUNS["cosine"],
    "wsd": {"schedule.name": "wsd", "schedule.decay_frac": 0.2, "schedule.min_lr_frac": 0.0},
}

SMOKE_STEPS = 100  # four reports a run to fit

_data: SweepData | None = None  # inherited by the worker processes


def _config(settings: dict[str, Any], compute: float, model: str) -> TrialConfig:
    base = {f"model.{k}": v for k, v in MODEL_PRESETS[model].items()}
    base.update({"budget.compute": compute, "batch_size": 16, "eval_every": 25, "peak_lr": 3e-3})
    return TrialConfig.from_flat({**base, "schedule.warmup_frac": 0.02, **settings})


def _curve(name: str, settings: dict[str, Any], compute: float, model: str) -> Curve:
    torch.set_num_threads(1)
    reports: list[dict[str, Any]] = []
    train_lm(_config(settings, compute, model), _data, reports.append)
    rows = [r for r in reports if "val_loss" in r]
    return Curve.from_log(name, [r["step"] for r in rows], [r["lr"] for r in rows], [r["val_loss"] for r in rows])


def _same(args: argparse.Namespace, n: int) -> tuple[list[float], list[str]]:
    return [args.compute] * n, [args.model] * n


def main() -> None:
    global _data
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compute", type=float, default=1.5e6)
    parser.add_argument("--model", choices=sorted(MODEL_PRESETS), default="small")
    parser.add_argument("--min-step", type=int, default=0, help="fit only rows from this step")
    add_smoke_flag(parser)
    args = parser.parse_args()
    if args.smoke:
        args.model, args.min_step = SMOKE_MODEL, 0
        args.compute = SMOKE_STEPS * 16 * MODEL_PRESETS[SMOKE_MODEL]["seq_len"]
    corpus = default_corpus(args.smoke)
    _data = prepare_default_model_data(corpus, MODEL_PRESETS[args.model]["seq_len"])
    with ProcessPoolExecutor(max_workers=2) as pool:  # fork: workers share the prepared data
        fitted = list(pool.map(_curve, FIT_RUNS, FIT_RUNS.values(), *_same(args, 3)))
        fit = fit_mpl([c.from_step(args.min_step) for c in fitted], per_curve=())
        law = fit.params()
        optimal = {"schedule.name": "mpl_optimal", **{f"schedule.mpl_law.{k}": v for k, v in law.as_dict().items()}}
        runs = {**COMPARED, "mpl_optimal": optimal}
        compared = list(pool.map(_curve, runs, runs.values(), *_same(args, len(runs))))
    results = {}
    for curve in compared:
        predicted = float(fit.predict(curve.lrs, curve.steps[-1:])[0])
        results[curve.name] = {"final_val_loss": float(curve.losses[-1]), "mpl_predicted": predicted}
        print(f"{curve.name}: final {curve.losses[-1]:.4f}, predicted {predicted:.4f}", file=sys.stderr)
    rates = _config(optimal, args.compute, args.model).planned_lrs()
    tenths = np.minimum((np.arange(11) / 10 * len(rates)).astype(int), len(rates) - 1)
    shape = {f"{i / 10:.1f}": float(rates[t] / rates.max()) for i, t in enumerate(tenths)}
    best_baseline = min(results[n]["final_val_loss"] for n in COMPARED)
    print(
        json.dumps(
            {
                "corpus": Path(corpus).name,
                "model": args.model,
                "compute": args.compute,
                "min_step": args.min_step,
                "fit": fit.to_json(),
                "runs": results,
                "mpl_optimal_vs_best_baseline": results["mpl_optimal"]["final_val_loss"] / best_baseline - 1.0,
                "mpl_optimal_shape": shape,
            }
        )
    )


if __name__ == "__main__":
    main()
