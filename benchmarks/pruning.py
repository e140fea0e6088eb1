"""Pruners compared on the curve bank, by replaying recorded trials through real Tune schedulers.

For each of several random orders of the bank's trials, a Tune run replays
them (``replay``; ``concurrency`` at a time, like a sweep on a
few workers) under no pruning, ASHA, median stopping, Hyperband and the
``mpl`` pruner. Per scheduler: compute used (the compute of every report let
through) and regret (final loss of the best trial it ran to the end, minus
the best final loss in the bank, relative). Then Spearman correlation of
MPL's predictions at 10%, 20% and 30% of each trial's budget with the true
final losses: the decay shape fitted on the trials the law models among the
first ``SHARED`` of each order, the rest predicted; a trial the law does not
model, or with no token-phase points yet (a patch trial early on), is ranked
by its last loss, as the pruner's fallback ranks it. Hyperband is Tune's
asynchronous form (three brackets): the synchronous one pauses trials, and a
replay without checkpoints would restart from scratch on resume.

ASHA runs at its defaults (first cut at 25%, reduction factor 3), in an
aggressive setting (first cut at the first decision point, factor 4), a late
one (first cut at 40%, factor 3) and a conservative one (first cut at half
the budget, factor 2); MPL at its defaults and with intervals of 0.5
standard errors. ``mpl_to_asha_compute``
compares them at equal regret: the compute of the cheapest MPL setting whose
mean regret is at most ``TARGET`` over that of the cheapest such ASHA
setting. No pruning counts as a setting of both (ASHA with its first cut at
the full budget; MPL that never decides), so where no setting of one reaches
``TARGET`` it needs all the compute.

``--first-decision`` (10% unless given) is the earliest share of its budget
at which any pruner may stop a trial, the same for all: aggressive ASHA's and
Hyperband's first rung, MPL's first decision point, the oracles' decision,
and the first share the Spearman correlation is measured at.

Two oracles bound what any predictor could do. Each knows every trial's
final loss and stops, at the first decision point, every trial whose
final loss is more than ``TARGET`` above the bank's best: ``oracle`` only
once three trials have completed, as ``mpl`` must wait for a fitted decay
shape, and ``oracle_unwaiting`` from the first trial on.

``--prior-bank PATH`` adds ``mpl_prior``: the ``mpl`` pruner given, as its
prior, the shared fit of another bank's modelled trials (another sweep on
the same model and validation data), so it judges from the first trials.

Run: ``.venv/bin/python benchmarks/pruning.py [--bank PATH] [--prior-bank PATH] [--orders 3]
[--concurrency 4] [--first-decision 0.1] [--smoke]``; the bank is ``curves/bank.parquet`` (the joint
space) unless ``--bank`` names another, such as ``curves/planned.parquet`` (planned schedules only; see
``benchmarks/record_curves.py``). ``--smoke`` replays the first ``SMOKE_TRIALS`` trials of each bank,
every ``SMOKE_EVERY``-th report of each (and its last), in one order, two at a time: a Tune run's cost is
its replay actors' start and the results it handles.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray import tune
from ray.tune.experiment import Trial
from ray.tune.schedulers import (
    ASHAScheduler,
    AsyncHyperBandScheduler,
    FIFOScheduler,
    MedianStoppingRule,
    TrialScheduler,
)
from replay import BankOrder, config_key, read_bank, replay_trial
from scipy.stats import spearmanr
from smoke import add_smoke_flag

from orchestrator.mpl.fit import MPLFit, fit_mpl
from orchestrator.mpl.pruner import DECISION_FRACTIONS, MPLPruner
from orchestrator.mpl.tracks import TrialTrack, predict_final

CURVES = Path(__file__).resolve().parent / "curves"
SHARED = 8
TARGET = 0.005
FRACTIONS = (0.1, 0.2, 0.3)  # of a trial's budget, where the Spearman correlation is measured
SMOKE_TRIALS = SHARED + 3  # a shared fit, and enough trials after it to rank
SMOKE_EVERY = 4


class _Oracle(FIFOScheduler):
    """Stops a trial that will not end within ``TARGET`` of the best, at its first decision point."""

    def __init__(self, truth: dict[str, float], first: float, wait_for: int) -> None:
        super().__init__()
        self.truth, self.first, self.wait_for = truth, first, wait_for
        self.good_enough = min(truth.values()) * (1.0 + TARGET)
        self.completed = 0
        self._stop_at: dict[str, float] = {}  # per trial, the compute it is stopped at (once per trial, not report)

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict) -> None:
        self.completed += 1

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        if trial.trial_id not in self._stop_at:
            losing = self.truth[config_key(trial.config)] > self.good_enough
            budget = TrialTrack.from_config(trial.config).budget
            self._stop_at[trial.trial_id] = self.first * budget if losing else math.inf
        if self.completed >= self.wait_for and result["compute"] >= self._stop_at[trial.trial_id]:
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE


def _schedulers(
    budget: float, folder: Path, truth: dict[str, float], prior: MPLFit | None, first: float
) -> dict[str, Any]:
    rungs = {"time_attr": "compute", "metric": "val_loss", "mode": "min"}
    decisions = {"fractions": tuple(sorted({first, *(f for f in DECISION_FRACTIONS if f > first)})), "min_completed": 3}
    schedulers = {
        "none": FIFOScheduler(),
        "asha": ASHAScheduler(max_t=budget, grace_period=0.25 * budget, reduction_factor=3, **rungs),
        "asha_aggressive": ASHAScheduler(max_t=budget, grace_period=first * budget, reduction_factor=4, **rungs),
        "asha_late": ASHAScheduler(max_t=budget, grace_period=0.4 * budget, reduction_factor=3, **rungs),
        "asha_conservative": ASHAScheduler(max_t=budget, grace_period=0.5 * budget, reduction_factor=2, **rungs),
        "median": MedianStoppingRule(grace_period=0.25 * budget, min_samples_required=3, **rungs),
        "hyperband": AsyncHyperBandScheduler(
            max_t=budget, grace_period=first * budget, reduction_factor=3, brackets=3, **rungs
        ),
        "mpl": MPLPruner(folder, background=False, **decisions),
        "mpl_aggressive": MPLPruner(folder.with_name(f"{folder.name}-z0.5"), z=0.5, background=False, **decisions),
        "oracle": _Oracle(truth, first, wait_for=3),
        "oracle_unwaiting": _Oracle(truth, first, wait_for=0),
    }
    if prior:
        schedulers["mpl_prior"] = MPLPruner(
            folder.with_name(f"{folder.name}-prior"), prior=prior, background=False, **decisions
        )
    return schedulers


def _replay(order: list[dict[str, Any]], reports: dict, scheduler: Any, concurrency: int, storage: Path) -> dict:
    tuner = tune.Tuner(
        tune.with_parameters(replay_trial, reports=reports),
        tune_config=tune.TuneConfig(
            search_alg=BankOrder(order),
            max_concurrent_trials=concurrency,
            scheduler=scheduler,
            num_samples=len(order),
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(storage_path=str(storage), verbose=0),
    )
    grid = tuner.fit()
    compute, finals = 0.0, {}
    for result in grid:
        history = result.metrics_dataframe
        compute += float(history["compute"].max())
        final = result.metrics.get("final_val_loss")
        if final is not None and math.isfinite(final):
            finals[config_key(result.config)] = float(final)
    return {"compute": compute, "best": min(finals.values())}


def _shared_fit(configs: list[dict[str, Any]], reports: dict) -> MPLFit:
    """L0 and the decay shape fitted on the whole curves of those of ``configs`` the law models."""
    tracks = []
    for config in configs:
        track = TrialTrack.from_config(config)
        for report in reports[config_key(config)]:
            track.observe(report)
        tracks.append(track)
    curves = [t.curve(str(i)) for i, t in enumerate(tracks) if t.modelled and len(t.steps) >= 3]
    return fit_mpl(curves, per_curve=("A",))


def _spearman(
    order: list[dict[str, Any]], reports: dict, truth: dict[str, float], fractions: tuple[float, ...]
) -> dict[float, float]:
    fit = _shared_fit(order[:SHARED], reports)
    scores = {}
    for fraction in fractions:
        predicted, actual = [], []
        for config in order[SHARED:]:
            key = config_key(config)
            early = TrialTrack.from_config(config)
            for report in reports[key]:
                if report["compute"] > fraction * early.budget:
                    break
                early.observe(report)
                last_loss = report.get("val_loss", math.nan)
            prediction = predict_final(early, fit, z=1.64) if early.modelled else None
            predicted.append(prediction.value if prediction else last_loss)
            actual.append(truth[key])
        scores[fraction] = float(spearmanr(predicted, actual).statistic)
    return scores


def _read(bank: Path, smoke: bool) -> tuple[list[dict[str, Any]], dict]:
    configs, reports = read_bank(bank)
    if not smoke:
        return configs, reports
    kept = {config_key(c): reports[config_key(c)] for c in configs[:SMOKE_TRIALS]}
    return configs[:SMOKE_TRIALS], {key: [*curve[:-1:SMOKE_EVERY], curve[-1]] for key, curve in kept.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bank", type=Path, default=CURVES / "bank.parquet")
    parser.add_argument("--orders", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--prior-bank", type=Path, help="another bank; an extra mpl_prior run starts from its fit")
    parser.add_argument(
        "--first-decision", type=float, default=0.1, help="earliest share of its budget at which a trial may be stopped"
    )
    add_smoke_flag(parser)
    args = parser.parse_args()
    if not 0 < args.first_decision < 1:
        parser.error(f"--first-decision must lie in (0, 1), got {args.first_decision}")
    if args.smoke:
        args.orders, args.concurrency = 1, 2
    fractions = tuple(sorted({args.first_decision, *FRACTIONS}))
    configs, reports = _read(args.bank, args.smoke)
    prior = _shared_fit(*_read(args.prior_bank, args.smoke)) if args.prior_bank else None
    truth = {config_key(c): reports[config_key(c)][-1]["final_val_loss"] for c in configs}
    best = min(truth.values())
    total = sum(reports[config_key(c)][-1]["compute"] for c in configs)
    budget = max(TrialTrack.from_config(c).budget for c in configs)
    ray.init(address="local", num_cpus=args.concurrency, include_dashboard=False, log_to_driver=False)
    runs: dict[str, list[dict[str, float]]] = {}
    spearman: dict[float, list[float]] = {f: [] for f in fractions}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.orders):
            order = [configs[i] for i in np.random.default_rng(seed).permutation(len(configs))]
            for fraction, rho in _spearman(order, reports, truth, fractions).items():
                spearman[fraction].append(rho)
            schedulers = _schedulers(budget, Path(tmp) / f"mpl-{seed}", truth, prior, args.first_decision)
            for name, scheduler in schedulers.items():
                outcome = _replay(order, reports, scheduler, args.concurrency, Path(tmp) / f"{name}-{seed}")
                runs.setdefault(name, []).append(
                    {"compute": outcome["compute"] / total, "regret": outcome["best"] / best - 1.0}
                )
                print(f"order {seed} {name}: {runs[name][-1]}", flush=True)
    ray.shutdown()
    summary: dict[str, Any] = {
        "bank": args.bank.name,
        "trials": len(configs),
        "orders": args.orders,
        "concurrency": args.concurrency,
        "prior_bank": args.prior_bank.name if args.prior_bank else None,
        "first_decision": args.first_decision,
    }
    for name, outcomes in runs.items():
        summary[f"{name}_compute"] = float(np.mean([o["compute"] for o in outcomes]))
        summary[f"{name}_regret"] = float(np.mean([o["regret"] for o in outcomes]))
        summary[f"{name}_worst_regret"] = float(np.max([o["regret"] for o in outcomes]))
    for fraction, values in spearman.items():
        summary[f"spearman_at_{round(fraction * 100)}pct"] = float(np.mean(values))
    families = {
        "asha": ("none", "asha", "asha_aggressive", "asha_late", "asha_conservative"),
        "mpl": ("none", "mpl", "mpl_aggressive"),
        "mpl_prior": ("none", "mpl_prior"),
    }
    cheapest = {
        family: min(
            (summary[f"{n}_compute"] for n in names if n in runs and summary[f"{n}_regret"] <= TARGET),
            default=math.nan,
        )
        for family, names in families.items()
    }
    summary["mpl_to_asha_compute"] = cheapest["mpl"] / cheapest["asha"]
    if prior:
        summary["mpl_prior_to_asha_compute"] = cheapest["mpl_prior"] / cheapest["asha"]
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
