"""The critical-batch-size finder against a dense grid, on the default model and a real corpus.

The finder (``effsweep cbs``'s ``run_batch_study``: a pilot at half the
budget picks the target, a geometric round, a refinement round) runs first;
then a dense grid of batch sizes a factor sqrt(2) apart, from 4 to 256, runs
every size to the same target. Both fit S(b) = S_min (1 + B_crit / b) to the
falling side of what they measured (the batch sizes up to the one with the
fewest steps; ``orchestrator.cbs.study``). Compute is every trial's compute (the pilot's included for
the finder). The noise scale is the mean of the last ``gns`` the grid's
trials reported, against the grid's B_crit.

The ``small`` model, AdamW at 3e-3 for batch 16 with square-root scaling,
constant schedule after 5% warmup, Alpaca (``../shared/data/alpaca_data.json``;
else gensim's ``lee_background``).

Run: ``.venv/bin/python benchmarks/cbs.py [--compute 1e6] [--smoke]``; the last
line printed is one JSON object. ``--smoke`` gives every trial ``SMOKE_COMPUTE``
and the grid every fourth size.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import ray
from corpora import default_corpus
from smoke import SMOKE_MODEL, add_smoke_flag

from orchestrator.cbs.fit import fit_critical_batch
from orchestrator.cbs.study import falling_side, measured_points, round_spec, run_batch_study
from orchestrator.spec import parse_spec
from orchestrator.sweep import SWEEP_ENV, run_sweep
from trainables.config import MIN_STEPS
from trainables.model import MODEL_PRESETS

DENSE = (4, 6, 8, 11, 16, 23, 32, 45, 64, 91, 128, 181, 256)
# The least compute that leaves the pilot (batch 64, half the budget) the steps a trial needs.
SMOKE_COMPUTE = 2 * MIN_STEPS * 64 * MODEL_PRESETS[SMOKE_MODEL]["seq_len"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compute", type=float, default=1e6)
    add_smoke_flag(parser)
    args = parser.parse_args()
    model, compute, dense = (SMOKE_MODEL, SMOKE_COMPUTE, DENSE[::4]) if args.smoke else ("small", args.compute, DENSE)
    corpus = default_corpus(args.smoke)
    ray.init(address="local", num_cpus=2, include_dashboard=False, runtime_env={"env_vars": SWEEP_ENV})
    with tempfile.TemporaryDirectory() as tmp:
        spec = parse_spec(
            {
                "name": "cbs-bench", "output_dir": str(Path(tmp) / "finder"),
                "data": {"corpus": corpus, "val_fraction": 0.1, "eval_tokens": 8192},
                "model": {"size": model}, "budget": {"compute": compute},
                "train": {"eval_every": 5, "batch_size": 16, "peak_lr": 3e-3, "schedule.name": "constant"},
                "search": {"seed": {"choice": [0]}}, "searcher": "grid",
            }
        )  # fmt: skip
        study = run_batch_study(spec)
        finder_compute = sum(_compute(Path(r)) for r in study.rounds)
        grid_sizes = [b for b in dense if compute / (b * spec.model.seq_len) >= 10]
        grid = run_sweep(round_spec(spec, Path(tmp) / "grid", grid_sizes, study.target))
        points = measured_points(grid)
        falling = falling_side(points)  # the finder's rule, applied to the grid alike
        grid_fit = fit_critical_batch(falling["batch_size"], falling["steps"])
        grid_compute = _compute(grid.layout.root)
    ray.shutdown()
    gns = float(np.nanmean(points["gns"]))
    result = {
        "corpus": Path(corpus).name,
        "compute_per_trial": compute,
        "target_loss": study.target,
        "finder_bcrit": study.fit.b_crit,
        "finder_bcrit_interval": list(study.fit.interval),
        "finder_batch_sizes": study.points["batch_size"].tolist(),
        "grid_bcrit": grid_fit.b_crit,
        "grid_bcrit_interval": list(grid_fit.interval),
        "grid_batch_sizes": grid_sizes,
        "grid_reached": int(points["reached"].sum()),
        "grid_outpaced": points.loc[points["outpaced"], "batch_size"].tolist(),
        "finder_outpaced": study.points.loc[study.points["outpaced"], "batch_size"].tolist(),
        "finder_fitted_batch_sizes": study.points.loc[study.points["fitted"], "batch_size"].tolist(),
        "grid_fitted_batch_sizes": falling["batch_size"].tolist(),
        "bcrit_ratio_to_grid": study.fit.b_crit / grid_fit.b_crit,
        "finder_compute": finder_compute,
        "grid_compute": grid_compute,
        "compute_fraction_of_grid": finder_compute / grid_compute,
        "gns_mean": gns,
        "gns_ratio_to_grid_bcrit": gns / grid_fit.b_crit,
    }
    print(points.to_string(), file=sys.stderr)
    print(json.dumps(result))


def _compute(sweep_dir: Path) -> float:
    """Every trial's compute in a sweep: its last report's."""
    trials = pd.read_parquet(sweep_dir / "results" / "trials.parquet")
    return float(trials["compute"].sum())


if __name__ == "__main__":
    main()
