"""``effsweep cbs``: the critical batch size from steps to a target loss, measured where it matters.

The study runs the spec's trial at several batch sizes, each until it
reaches the target validation loss (``target_loss``: the trial stops there
and reports the interpolated ``steps_to_target``; one that spends its budget
first is unreachable and left out of the fit). Round 1 is geometric, a
factor 4 apart from 4 (the first three sizes that leave a trial at least
``MIN_STEPS`` steps), and grows upwards, a size at a time, only while the
largest size still needs fewer steps than the one before it. Round 2 adds
the batch sizes either side of the first estimate of B_crit, at factors of
sqrt(2), where the fit is least sure.

A trial stops as soon as a smaller batch size has reached the target in
fewer steps than it has taken (``orchestrator.cbs.outpaced``): it is past the
fewest steps, which the fit leaves out whatever it does next.

S(b) = S_min (1 + B_crit / b) is fitted to the *falling side*: the reached
batch sizes up to the one with the fewest steps. The law lets S only fall
as b grows; where measured steps rise again, the learning-rate rule has
stopped suiting the larger batches (or the target lies in the first fast
descent, which no batch size shortens), and those points say nothing about
B_crit. The table and plot still show them.

The learning rate follows ``lr_scaling`` (square-root scaling from the
spec's batch size by default, the rule for Adam). Without ``--target``, a
pilot trial at the first round's largest batch size runs half the budget,
and its final validation loss is the target. That size reaches it with half
its budget to spare, and every smaller size b' can too if the law holds:
it gets b / b' times the steps for the same compute, and needs only
(1 + B_crit / b') / (1 + B_crit / b) times as many, which is less.

Every round is an ordinary sweep (``DIR/round-N``, its own MLflow parent
run, trials reporting ``gns`` too); the study's table, plot and JSON go to
``DIR`` and to the last round's parent run.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from mlflow.tracking import MlflowClient

from orchestrator.cbs.fit import CriticalBatchFit, fit_critical_batch, most_efficient_batch
from orchestrator.plots import plot_batch_study
from orchestrator.spec import SpecError, SweepSpec, parse_spec
from orchestrator.sweep import SweepOutcome, run_sweep
from trainables.config import MIN_STEPS

GEOMETRIC_FACTOR = 4
GEOMETRIC = (4, 16, 64, 256)  # a factor 4 apart: the refinement fills in around the knee


class UnreachableTarget(ValueError):
    """Too few batch sizes reached the target to fit anything."""


@dataclass
class BatchStudy:
    """The measured points (one per batch size) and the fits."""

    target: float
    points: pd.DataFrame  # batch_size, reached, steps, examples, gns, outpaced, fitted (on the falling side)
    fit: CriticalBatchFit | None = None
    b_star: float | None = None
    rounds: list[Path] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        fit = self.fit
        return {
            "target_loss": self.target,
            "b_crit": fit.b_crit if fit else None,
            "b_crit_interval": list(fit.interval) if fit else None,
            "s_min": fit.s_min if fit else None,
            "e_min": fit.e_min if fit else None,
            "b_star": self.b_star,
            "gns": _mean_finite(self.points["gns"]),
            "points": self.points.to_dict(orient="records"),
            "rounds": [str(r) for r in self.rounds],
        }


def run_batch_study(spec: SweepSpec, *, target: float | None = None, sizes: list[int] | None = None,
                    address: str | None = None, ray_dashboard: bool = False) -> BatchStudy:  # fmt: skip
    """Measure steps to the target at a geometric set of batch sizes, refine around the knee, fit.

    ``address`` and ``ray_dashboard`` choose the Ray each round runs on, as for ``run_sweep``.
    """
    root = spec.output_dir.resolve()
    explicit = sizes is not None
    sizes = sorted(sizes) if sizes else [b for b in GEOMETRIC if _steps(spec, b) >= MIN_STEPS][:3]
    if len(sizes) < 3:
        raise UnreachableTarget(f"budget.compute leaves fewer than 3 batch sizes of {GEOMETRIC} {MIN_STEPS} steps")
    rounds: list[Path] = []
    ray_target = {"address": address, "ray_dashboard": ray_dashboard}
    if target is None:
        half = dataclasses.replace(spec, budget=spec.budget.model_copy(update={"compute": spec.budget.compute / 2}))
        pilot = run_sweep(round_spec(half, root / "pilot", [sizes[-1]], None), **ray_target)
        rounds.append(pilot.layout.root)
        target = _final_loss(pilot)

    def measure(name: str, batch_sizes: list[int]) -> SweepOutcome:
        outcome = run_sweep(round_spec(spec, root / name, batch_sizes, target), **ray_target)
        rounds.append(outcome.layout.root)
        return outcome

    outcome = measure("round-1", sizes)
    points = measured_points(outcome)
    if not explicit:
        for grown, larger in enumerate(_larger_sizes(spec, sizes[-1]), start=1):
            if not _still_falling(points):
                break
            outcome = measure(f"round-1-up{grown}", [larger])
            points = _joined(points, measured_points(outcome))
    refine = _around_knee(points, spec)
    if refine:
        outcome = measure("round-2", refine)
        points = _joined(points, measured_points(outcome))
    reached = points[points["reached"]]
    if len(reached) < 3:
        raise UnreachableTarget(
            f"only {len(reached)} of {len(points)} batch sizes reached the target loss {target:.4f} within "
            f"budget.compute; raise the budget or give a higher --target"
        )
    falling = falling_side(points)
    if len(falling) < 3:
        raise UnreachableTarget(
            f"steps to the target loss {target:.4f} stop falling after batch size {int(falling['batch_size'].max())}"
            f", leaving {len(falling)} sizes to fit; add smaller ones with --sizes"
        )
    points["fitted"] = points["batch_size"].isin(falling["batch_size"])
    study = BatchStudy(target, points, rounds=rounds)
    study.fit = fit_critical_batch(falling["batch_size"], falling["steps"])
    try:
        study.b_star = most_efficient_batch(falling["batch_size"], falling["steps"])
    except ValueError:
        study.b_star = None  # the steps do not follow K(b) here; B_crit stands alone
    _publish(study, root, outcome)
    return study


def falling_side(points: pd.DataFrame) -> pd.DataFrame:
    """The reached points up to the batch size with the fewest steps: where S(b) can follow the law.

    Example:
        >>> points = pd.DataFrame({"batch_size": [4, 8, 16, 32], "reached": True, "steps": [50.0, 30, 22, 28]})
        >>> falling_side(points)["batch_size"].tolist()
        [4, 8, 16]
    """
    reached = points[points["reached"]].sort_values("batch_size", ignore_index=True)
    if reached.empty:
        return reached
    return reached.iloc[: int(reached["steps"].to_numpy().argmin()) + 1]


def write_batch_size(spec_path: Path, batch_size: int, out: Path) -> None:
    """Write ``spec_path`` with ``train.batch_size`` fixed to ``batch_size`` (and no batch_size knob) to ``out``."""
    raw = yaml.safe_load(spec_path.read_text())
    raw.setdefault("train", {})["batch_size"] = int(batch_size)
    if isinstance(raw.get("search"), dict):
        raw["search"].pop("batch_size", None)
    parse_spec(raw)  # the spec must stay valid
    out.write_text(yaml.safe_dump(raw, sort_keys=False))


def _steps(spec: SweepSpec, batch_size: int) -> float:
    return spec.budget.compute / (batch_size * spec.model.seq_len)


def round_spec(spec: SweepSpec, output: Path, sizes: list[int], target: float | None) -> SweepSpec:
    """A sweep of ``spec``'s trial at ``sizes``, each stopping at ``target``, reporting gns, into ``output``."""
    train = {k: v for k, v in spec.train.items() if k != "batch_size"}
    train.update(gns=True, lr_scaling=train.get("lr_scaling", "sqrt"))
    train.setdefault("lr_reference_batch", int(spec.fixed_config().get("batch_size", 16)))
    if target is not None:
        train["target_loss"] = target
    raw = yaml.safe_load(spec.source) | {
        "name": f"{spec.name}-{output.name}",
        "output_dir": str(output),
        "budget": spec.budget.model_dump(),  # the pilot's is half the spec's
        "storage": spec.storage,
        "train": train,
        "search": {"batch_size": {"choice": sorted(sizes)}},
        "searcher": "grid",
        "scheduler": "fifo",
    }
    raw.pop("trials", None)
    try:
        return parse_spec(raw)
    except SpecError as exc:
        raise SpecError([f"cbs round {output.name}: {p}" for p in exc.problems]) from None


def _final_loss(pilot: SweepOutcome) -> float:
    best = pilot.results.best()
    if best is None:
        raise UnreachableTarget("the pilot trial did not finish; no target loss to aim at")
    return float(best["final_val_loss"])


def measured_points(outcome: SweepOutcome) -> pd.DataFrame:
    """One row per trial of a round: batch size, whether it reached the target, steps, examples, last gns,
    and whether it was outpaced (stopped once a smaller batch size had reached the target in fewer steps)."""
    trials = outcome.results.trials.set_index("trial_id")
    metrics = outcome.results.metrics
    rows = []
    for trial_id, history in metrics.groupby("trial_id"):
        batch = int(trials.loc[trial_id, "config.batch_size"])
        steps = history["steps_to_target"].max() if "steps_to_target" in history else math.nan
        reached = bool(math.isfinite(steps))
        gns = history["gns"].dropna().iloc[-1] if "gns" in history and history["gns"].notna().any() else math.nan
        outpaced = not reached and trials.loc[trial_id, "status"] == "pruned"
        rows.append({"batch_size": batch, "reached": reached, "steps": float(steps),
                     "examples": float(steps * batch), "gns": float(gns), "outpaced": outpaced})  # fmt: skip
    return pd.DataFrame(rows).sort_values("batch_size", ignore_index=True)


def _larger_sizes(spec: SweepSpec, largest: int) -> list[int]:
    """The geometric sizes above ``largest`` that still leave a trial ``MIN_STEPS`` steps."""
    sizes, size = [], largest * GEOMETRIC_FACTOR
    while _steps(spec, size) >= MIN_STEPS:
        sizes.append(size)
        size *= GEOMETRIC_FACTOR
    return sizes


def _still_falling(points: pd.DataFrame) -> bool:
    """Whether the largest batch size measured reached the target in fewer steps than every smaller one."""
    reached = points[points["reached"]].sort_values("batch_size")
    largest = points["batch_size"].max()
    return bool(len(reached) >= 2 and reached["batch_size"].iloc[-1] == largest
                and reached["steps"].iloc[-1] < reached["steps"].iloc[:-1].min())  # fmt: skip


def _joined(points: pd.DataFrame, more: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([points, more], ignore_index=True).sort_values("batch_size", ignore_index=True)


def _around_knee(points: pd.DataFrame, spec: SweepSpec) -> list[int]:
    """Batch sizes a factor sqrt(2) either side of the falling side's B_crit, within it and not yet measured."""
    falling = falling_side(points)
    if len(falling) < 2:
        return []
    try:
        b_crit = fit_critical_batch(falling["batch_size"], falling["steps"], bootstrap=0).b_crit
    except ValueError:
        return []
    measured = set(points["batch_size"])
    fewest = int(falling["batch_size"].max())
    candidates = {round(b_crit / math.sqrt(2)), round(b_crit * math.sqrt(2))}
    if len(falling) < 3:  # the fit needs a third point on the falling side whatever B_crit looks like now
        sizes = falling["batch_size"].to_numpy(dtype=float)
        candidates |= {round(math.sqrt(a * b)) for a, b in itertools.pairwise(sizes)}
    return sorted(b for b in candidates if 1 <= b <= fewest and b not in measured and _steps(spec, b) >= MIN_STEPS)


def _mean_finite(values: pd.Series) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else None


def _publish(study: BatchStudy, root: Path, last_round: SweepOutcome) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "cbs.json").write_text(json.dumps(study.to_json(), indent=2) + "\n")
    picture = plot_batch_study(study.points, study.fit, root / "cbs.png")
    client = MlflowClient(last_round.record.tracking_uri)
    for artifact in (root / "cbs.json", picture):
        client.log_artifact(last_round.record.parent_run_id, str(artifact))
    if study.fit:
        client.log_metric(last_round.record.parent_run_id, "b_crit", study.fit.b_crit)
