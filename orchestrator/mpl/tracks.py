"""What the MPL pruner knows of each trial, and how it predicts a trial's final loss from it.

A ``TrialTrack`` holds a trial's planned rates and the validation losses seen
in its judged phase; ``predict_final`` fits the trial's own amplitude on top
of the sweep's shared law and gives the final loss with an interval;
``calibrate`` measures how far such predictions missed on finished trials.
The reasoning is in ``orchestrator.mpl.pruner``'s docstring.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from orchestrator.curves import Curve
from orchestrator.mpl.fit import MPLFit, fit_mpl
from trainables.config import TrialConfig
from trainables.laws.multipower import schedule_terms
from trainables.step_rules import step_rule_class


@dataclass(frozen=True)
class Prediction:
    value: float
    low: float
    high: float


def should_stop(prediction: Prediction, incumbent_high: float, margin: float) -> bool:
    """Stop when the trial's optimistic final loss is worse than the incumbent's pessimistic one by ``margin``."""
    return prediction.low > incumbent_high * (1.0 + margin)


@dataclass
class TrialTrack:
    """What the pruner knows of one trial: its judged phase's planned rates and the losses seen in it."""

    budget: float
    offset: int  # steps before the judged (token) phase
    planned: list[float] | None  # per-step rates of the judged phase; None: the rule chooses its own
    modelled: bool = True  # whether the law predicts it (see the module docstring)
    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    computes: list[float] = field(default_factory=list)  # the trial's compute at each of ``steps``
    compute: float = 0.0
    next_decision: int = 0
    final: float | None = None
    last: Prediction | None = None
    latest_loss: float | None = None  # the last validation loss, any phase
    losses_at_decisions: list[float] = field(default_factory=list)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TrialTrack:
        cfg = TrialConfig.from_flat(config)
        patch_steps, _ = cfg.phase_steps
        planned = cfg.planned_lrs()
        judged = None if planned is None else planned[patch_steps:].tolist()
        modelled = step_rule_class(cfg.optimizer.name).law_modelled
        return cls(cfg.budget.compute, patch_steps, judged, modelled)

    def observe(self, result: dict[str, Any]) -> None:
        self.compute = float(result.get("compute", self.compute))
        loss = result.get("val_loss")
        if loss is None or not math.isfinite(loss):
            return
        self.latest_loss = float(loss)
        if result.get("phase", "token") != "token":
            return
        step = int(result["step"]) - self.offset
        if step >= 1 and (not self.steps or step > self.steps[-1]):
            self.steps.append(step)
            self.losses.append(float(loss))
            self.computes.append(self.compute)

    def schedule(self) -> np.ndarray:
        """Planned per-step rates of the judged phase (only trials the law models have them)."""
        if self.planned is None:
            raise ValueError("a trial whose rule chooses its own rate has no planned schedule")
        return np.asarray(self.planned)

    def until(self, compute: float) -> TrialTrack:
        """The track as it stood when the trial had spent ``compute``."""
        seen = sum(c <= compute for c in self.computes)
        return TrialTrack(
            self.budget, self.offset, self.planned, self.modelled, self.steps[:seen], self.losses[:seen],
            self.computes[:seen], compute,
        )  # fmt: skip

    def curve(self, name: str) -> Curve:
        lrs = self.schedule()
        return Curve(name, lrs[: self.steps[-1]], np.asarray(self.steps), np.asarray(self.losses))


def predict_final(track: TrialTrack, fit: MPLFit, z: float, min_relative_error: float = 0.0) -> Prediction | None:
    """The trial's final loss with an interval: A fitted to its curve so far, the rest from ``fit``.

    L0 and the decay shape are the sweep's (one model and one validation
    set: the trials share the loss the law tends to), so one parameter is
    fitted per trial; with L0 free as well, a curve that is still falling
    cannot tell L0 from A, and the predictions scatter. The interval's
    half-width is ``z`` standard errors, and at least ``min_relative_error``
    of the prediction (``calibrate`` measures it).
    """
    if len(track.steps) < 3:
        return None
    lrs = track.schedule()
    steps = np.asarray(track.steps)
    losses = np.asarray(track.losses)
    terms = schedule_terms(lrs, np.concatenate([steps, [len(lrs)]]))
    shape = fit.shared
    power = terms.power_area ** (-shape["alpha"])
    decay = shape["B"] * terms.decay(shape["C"], shape["beta"], shape["gamma"])
    # loss = L0 + A * power - decay, solved for A on relative residuals.
    x = power[:-1] / losses
    y = (losses + decay[:-1] - shape["L0"]) / losses
    amplitude = max(float(x @ y) / float(x @ x), 0.0)
    residual = amplitude * x - y
    sigma2 = max(float(residual @ residual) / max(len(steps) - 1, 1), fit.relative_rmse**2)
    value = float(shape["L0"] + amplitude * power[-1] - decay[-1])
    spread = math.sqrt(sigma2 / float(x @ x) * power[-1] ** 2 + (fit.relative_rmse * value) ** 2)
    half = max(z * spread, min_relative_error * value)
    return Prediction(value, value - half, value + half)


def calibrate(tracks: list[TrialTrack], fit: MPLFit, fractions: tuple[float, ...]) -> list[float]:
    """Per decision point, the largest relative error of predicting completed trials from their curve so far.

    The law describes a run's middle and end better than its start (a fresh
    model's loss first falls faster than any power law), so a prediction
    made early can be off by more than its standard error says; the trials
    that have finished show by how much, in this sweep.
    """
    errors = []
    for fraction in fractions:
        worst = 0.0
        for track in tracks:
            early = predict_final(track.until(fraction * track.budget), fit, z=0.0)
            if early is not None:
                worst = max(worst, abs(early.value - track.final) / track.final)
        errors.append(worst)
    return errors


def refit(
    curves: list[Curve], prior: dict[str, Any] | None, finished: list[TrialTrack], fractions: tuple[float, ...]
) -> dict[str, Any]:
    """The shared fit and its calibration, run in a separate process (so a picklable, top-level function)."""
    fit = fit_mpl(curves, per_curve=("A",), prior=MPLFit.from_json(prior) if prior else None)
    return {"fit": fit.to_json(), "calibration": calibrate(finished, fit, fractions)}


@dataclass
class RefitInputs:
    """A refit's data: what each modelled trial had spent, and which trials had finished, when it fell due."""

    spent: dict[str, float]
    finished: list[str]

    def curves(self, tracks: dict[str, TrialTrack]) -> list[Curve]:
        then = {tid: tracks[tid].until(compute) for tid, compute in self.spent.items()}
        return [track.curve(tid) for tid, track in then.items() if len(track.steps) >= 3]
