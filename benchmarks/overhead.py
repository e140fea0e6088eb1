"""Orchestration and tracking overhead of effsweep on this machine.

Three figures, each against the same work done without the part measured:

- ``per_trial_overhead_s``: a sweep of N short single-worker trials run one at
  a time (``concurrency: 1``, so no parallelism hides anything) against the
  same N trainings run back to back in one process, per trial. Ray is started
  before the clock starts; everything else (data preparation from cache,
  MLflow runs, result export) counts.
- ``mlflow_points_per_s``: metric points per second into the default store
  (SQLite) through the writer the trials log with (journaled, batched, on a
  background thread), ``mlflow_points_per_s_caller`` the rate at which the
  caller hands them over, and ``mlflow_points_per_s_single`` for one
  ``log_metric`` call per point.
- ``logging_slowdown``: how much longer a trial's own clock runs in the
  production sweep than in the same sweep with its MLflow callback replaced
  by one that does nothing, over alternating sweeps;
  ``orchestration_slowdown`` the same against a bare Tuner (Tune's default
  experiment snapshots, no callbacks), which also counts effsweep's snapshot
  after every turn of Tune's loop and its console progress.
- ``train_per_trial_overhead_s``: the same N trials as 2-worker Ray Train
  trials (``resources: {workers: 2}``, a ``TorchTrainer`` per trial, DDP on
  gloo) against single-worker Tune trials, per trial, one trial at a time.

Every figure is the median of ``--repeats`` runs (3 by default; each run's
figures are listed under ``runs``).

Run: ``.venv/bin/python benchmarks/overhead.py [--smoke]`` (about 4 minutes a
run); the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

import ray
import torch
from mlflow.tracking import MlflowClient
from ray import tune
from smoke import add_smoke_flag

from orchestrator import sweep as sweep_module
from orchestrator.run_writer import RunWriter
from orchestrator.searchers import METRIC, MODE
from orchestrator.searchers.grid import GridSearcher
from orchestrator.spec import SweepSpec, parse_spec
from orchestrator.sweep import SWEEP_ENV, prepare_data, run_sweep
from search_spaces.build import grid_points
from trainables.config import TrialConfig
from trainables.loop import train_lm
from trainables.trial import lm_trial

# A trial: 80 steps at batch 8 of the tiny model (a smoke run: 20); the slowdowns' trials run three times as long.
TRIAL_COMPUTE = 40960
SMOKE_TRIAL_COMPUTE = 10240


def _spec(root: Path, name: str, trials: int, compute: float, eval_every: int = 20, workers: int = 1) -> SweepSpec:
    return parse_spec(
        {
            "name": name,
            "output_dir": str(root / name),
            "data": {"corpus": "gensim:lee_background", "eval_tokens": 2048},
            "model": {"size": "tiny"},
            "budget": {"compute": compute},
            "train": {"eval_every": eval_every, "batch_size": 8},
            "search": {"seed": {"choice": list(range(trials))}},
            "searcher": "grid",
            "concurrency": 1,
            "resources": {"cpus": 1, "workers": workers},
        }
    )


def per_trial_overhead(root: Path, trials: int, compute: float) -> dict[str, float]:
    spec = _spec(root, "overhead", trials, compute=compute)
    data = prepare_data(spec)
    torch.set_num_threads(1)
    started = time.perf_counter()
    for point in grid_points(spec.knobs):
        train_lm(TrialConfig.from_flat({**spec.fixed_config(), **point}), data, lambda _: None)
    in_process = time.perf_counter() - started

    started = time.perf_counter()
    outcome = run_sweep(spec)
    sweep = time.perf_counter() - started
    assert outcome.results.counts()["completed"] == trials
    return {
        "trials": trials,
        "in_process_s": in_process,
        "sweep_s": sweep,
        "per_trial_overhead_s": (sweep - in_process) / trials,
    }


def train_per_trial_overhead(root: Path, trials: int, compute: float) -> dict[str, float]:
    seconds = {}
    for workers in (1, 2):
        spec = _spec(root, f"train-overhead-{workers}", trials, compute=compute, workers=workers)
        started = time.perf_counter()
        outcome = run_sweep(spec)
        seconds[workers] = time.perf_counter() - started
        assert outcome.results.counts()["completed"] == trials
    return {
        "train_trials": trials,
        "single_worker_sweep_s": seconds[1],
        "train_two_worker_sweep_s": seconds[2],
        "train_per_trial_overhead_s": (seconds[2] - seconds[1]) / trials,
    }


def mlflow_throughput(root: Path, points: int, single_points: int) -> dict[str, float]:
    """Points per second through the trials' writer (journal, background thread, batches) into SQLite."""
    client = MlflowClient(f"sqlite:///{root / 'throughput.db'}")
    experiment = client.create_experiment("throughput")
    parent = client.create_run(experiment).info.run_id
    writer = RunWriter(client.tracking_uri, experiment, parent, root / "throughput.jsonl")
    writer.open_trial("t", "throughput", {}, live=["t"])
    writer.flush()  # the run exists and the store's tables are open before the clock starts
    names = ["step", "tokens", "compute", "train_loss", "val_loss", "lr", "lr_sum", "wall_s", "extra", "more"]
    started = time.perf_counter()
    for step in range(points // len(names)):
        writer.log_metrics("t", {n: step * 0.5 for n in names}, step=step, timestamp_ms=step)
    handed_over = time.perf_counter() - started
    writer.close()
    batched = points / (time.perf_counter() - started)

    single_run = client.create_run(experiment).info.run_id
    started = time.perf_counter()
    for i in range(single_points):
        client.log_metric(single_run, names[i % len(names)], float(i), step=i // len(names))
    single = single_points / (time.perf_counter() - started)
    return {
        "mlflow_points_per_s": batched,
        "mlflow_points_per_s_caller": points / handed_over,
        "mlflow_points_per_s_single": single,
        "batched_points": points,
    }


class _Untracked(tune.Callback):
    """Stands in for the sweep's MLflow callback: takes the same arguments and does nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()


SIDES = ("production", "untracked", "bare")


def _trial_seconds(spec: SweepSpec, side: str, root: Path) -> list[float]:
    """Each trial's own clock (its last ``wall_s``) in a sweep of one of ``SIDES``."""
    if side != "bare":
        tracking = sweep_module.MlflowTrialCallback if side == "production" else _Untracked
        with mock.patch.object(sweep_module, "MlflowTrialCallback", tracking):
            outcome = run_sweep(spec)
        return outcome.results.metrics.groupby("trial_id")["wall_s"].max().tolist()
    trainable = tune.with_resources(tune.with_parameters(lm_trial, data=prepare_data(spec)), {"cpu": 1})
    tuner = tune.Tuner(
        trainable,
        param_space=spec.fixed_config(),
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode=MODE,
            search_alg=GridSearcher(grid_points(spec.knobs), metric=METRIC, mode=MODE),
            num_samples=spec.trials,
            max_concurrent_trials=1,
            reuse_actors=True,  # as run_sweep does
        ),
        run_config=tune.RunConfig(name=spec.name, storage_path=str(root / "bare"), verbose=0),
    )
    return [float(result.metrics_dataframe["wall_s"].max()) for result in tuner.fit()]


def logging_slowdown(root: Path, trials: int, rounds: int, compute: float) -> dict[str, Any]:
    """Sweeps of each side in turn, the order rotating each round, reporting every 5 steps (about 4 reports
    a second)."""
    times: dict[str, list[float]] = {side: [] for side in SIDES}
    for index in range(rounds):
        for side in SIDES[index % len(SIDES) :] + SIDES[: index % len(SIDES)]:
            spec = _spec(root, f"slowdown-{index}-{side}", trials, compute=3 * compute, eval_every=5)
            times[side].extend(_trial_seconds(spec, side, root))
    mean = {side: sum(seconds) / len(seconds) for side, seconds in times.items()}
    return {
        "trial_s_with_mlflow": mean["production"],
        "trial_s_without_mlflow": mean["untracked"],
        "trial_s_bare_tuner": mean["bare"],
        "logging_slowdown": mean["production"] / mean["untracked"] - 1,
        "orchestration_slowdown": mean["production"] / mean["bare"] - 1,
        "slowdown_trials_each": len(times["production"]),
    }


def measure(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One run of every figure (of the Ray Train one alone with ``--only-train``, of the slowdowns with
    ``--only-slowdown``)."""
    root.mkdir(parents=True)
    points, single_points, slowdown_trials = (200, 20, 1) if args.smoke else (20_000, 1_000, 4)
    compute = SMOKE_TRIAL_COMPUTE if args.smoke else TRIAL_COMPUTE
    if args.only_slowdown:
        return logging_slowdown(root, trials=slowdown_trials, rounds=args.rounds, compute=compute)
    result: dict[str, Any] = dict(train_per_trial_overhead(root, args.trials, compute))
    print(f"Ray Train per-trial overhead: {result['train_per_trial_overhead_s']:.3f} s", file=sys.stderr)
    if args.only_train:
        return result
    result.update(per_trial_overhead(root, args.trials, compute))
    print(f"per-trial overhead: {result['per_trial_overhead_s']:.3f} s", file=sys.stderr)
    result.update(mlflow_throughput(root, points=points, single_points=single_points))
    print(f"MLflow: {result['mlflow_points_per_s']:.0f} points/s through the writer", file=sys.stderr)
    result.update(logging_slowdown(root, trials=slowdown_trials, rounds=args.rounds, compute=compute))
    print(
        f"logging slowdown: {result['logging_slowdown']:+.2%}, "
        f"against a bare Tuner: {result['orchestration_slowdown']:+.2%}",
        file=sys.stderr,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of one sweep per side for the slowdowns")
    parser.add_argument("--repeats", type=int, default=3, help="runs of every figure; each is reported as the median")
    parser.add_argument("--only-train", action="store_true", help="measure the Ray Train path only")
    parser.add_argument("--only-slowdown", action="store_true", help="measure the two slowdowns only")
    add_smoke_flag(parser)
    args = parser.parse_args()
    if args.smoke:
        args.trials, args.rounds, args.repeats = 1, 1, 1
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        ray.init(
            address="local", num_cpus=2, include_dashboard=False, logging_level=logging.ERROR,
            runtime_env={"env_vars": SWEEP_ENV},
        )  # fmt: skip
        ray_init_s = time.perf_counter() - started
        runs = [measure(Path(tmp) / f"run-{index}", args) for index in range(args.repeats)]
        ray.shutdown()
    result: dict[str, Any] = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    print(json.dumps({"ray_init_s": ray_init_s, **result, "repeats": args.repeats, "runs": runs}))


if __name__ == "__main__":
    main()
