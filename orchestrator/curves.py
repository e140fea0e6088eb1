"""Loss curves read from CSV, how well a prediction matches one, and the base of the laws fitted to them.

A curve holds the learning rate of every step and the losses logged at some
steps; the laws (``orchestrator.laws.LAWS``: the Multi-Power Law, the
convergence-and-escape law) predict the losses from the rates. Curves may be
logged at intervals: the rate between logged steps is interpolated linearly,
and before the first logged step it warms up linearly from zero unless the
rate is given at step 0. See docs/schedules.md.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import least_squares


class CurveError(ValueError):
    """A loss curve that cannot be used; the message names the file or curve and the row."""


@dataclass(frozen=True)
class Curve:
    """A loss curve: per-step rates (step 1 first) and the losses logged at some steps."""

    name: str
    lrs: np.ndarray
    steps: np.ndarray
    losses: np.ndarray

    @classmethod
    def from_log(cls, name: str, steps: Sequence[float], lrs: Sequence[float], losses: Sequence[float]) -> Curve:
        """A curve from logged rows; the rate is interpolated between them (see the module docstring)."""
        steps, lrs, losses = (np.asarray(v, dtype=np.float64) for v in (steps, lrs, losses))
        for column, values in (("step", steps), ("lr", lrs), ("loss", losses)):
            bad = np.flatnonzero(~np.isfinite(values))
            if len(bad):
                raise CurveError(f"{name}: row {bad[0] + 1} has a missing or non-finite {column}")
        if len(steps) < 2:
            raise CurveError(f"{name}: needs at least two rows, got {len(steps)}")
        backwards = np.flatnonzero(np.diff(steps) <= 0)
        if len(backwards):
            row = backwards[0] + 2
            raise CurveError(
                f"{name}: steps must increase; row {row} has step {steps[row - 1]:g} after {steps[row - 2]:g}"
            )
        if steps[0] < 0 or not np.all(steps == np.round(steps)):
            raise CurveError(f"{name}: steps must be whole numbers from 0")
        if np.any(lrs < 0) or np.any(losses <= 0):
            raise CurveError(f"{name}: learning rates must be non-negative and losses positive")
        if steps[0] > 0:  # a linear warmup from zero to the first logged rate
            steps_known, lrs_known = np.concatenate([[0.0], steps]), np.concatenate([[0.0], lrs])
        else:
            steps_known, lrs_known = steps, lrs
        per_step = np.interp(np.arange(1, int(steps[-1]) + 1), steps_known, lrs_known)
        logged = steps >= 1  # the law predicts the loss after a step; step 0 has none
        return cls(name, per_step, steps[logged].astype(np.int64), losses[logged])

    @classmethod
    def read_csv(cls, path: Path) -> Curve:
        try:
            table = pd.read_csv(path)
        except FileNotFoundError:
            raise CurveError(f"{path}: no such file") from None
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise CurveError(f"{path}: not a readable CSV ({exc})") from None
        missing = [c for c in ("step", "lr", "loss") if c not in table.columns]
        if missing:
            raise CurveError(f"{path}: missing column(s) {', '.join(missing)}; need step, lr, loss")
        try:
            columns = [pd.to_numeric(table[c], errors="raise") for c in ("step", "lr", "loss")]
        except (ValueError, TypeError) as exc:
            raise CurveError(f"{path}: step, lr and loss must be numbers ({exc})") from None
        return cls.from_log(str(path), *columns)

    def from_step(self, min_step: int) -> Curve:
        """The curve's losses from ``min_step`` on; at least two rows."""
        kept = self.between(min_step, math.inf)
        if len(kept.steps) < 2:
            raise CurveError(f"{self.name}: fewer than two rows at or after step {min_step}")
        return kept

    def between(self, first: float, last: float) -> Curve:
        """The losses logged from step ``first`` to ``last``; the rates stay whole (the law needs every step's)."""
        keep = (self.steps >= first) & (self.steps <= last)
        return Curve(self.name, self.lrs, self.steps[keep], self.losses[keep])


def best_of_starts(
    residuals: Callable[[np.ndarray], np.ndarray],
    starts: Sequence[np.ndarray],
    lower: np.ndarray,
    upper: np.ndarray,
    *,
    huber_scale: float,
    max_nfev: int,
) -> np.ndarray:
    """The bounded Huber least-squares solution, of those reached from each of ``starts``, with the least cost.

    How a law fits its nonlinear parameters (in log space) to curves' relative residuals.
    """
    best = None
    for start in starts:
        result = least_squares(
            residuals, np.clip(start, lower + 1e-9, upper - 1e-9), bounds=(lower, upper),
            loss="huber", f_scale=huber_scale, max_nfev=max_nfev,
        )  # fmt: skip
        if best is None or result.cost < best.cost:
            best = result
    return best.x


class LawFit(abc.ABC):
    """A loss law fitted to curves: it predicts a curve's losses from its rates, and saves as JSON."""

    @classmethod
    @abc.abstractmethod
    def fit_curves(cls, curves: Sequence[Curve]) -> LawFit:
        """One set of the law's parameters for ``curves`` (one model on one corpus)."""

    @abc.abstractmethod
    def predict(self, lrs: np.ndarray, steps: np.ndarray) -> np.ndarray:
        """The loss after each of ``steps`` (1-based) of a run with per-step rates ``lrs``."""

    def fitted_peak_range(self) -> tuple[float, float] | None:
        """The lowest and highest peak rate of the curves fitted, where the fit recorded them."""
        return None

    @abc.abstractmethod
    def to_json(self) -> dict[str, Any]: ...

    @classmethod
    @abc.abstractmethod
    def from_json(cls, data: Mapping[str, Any]) -> LawFit: ...


def prediction_scores(predicted: np.ndarray, observed: np.ndarray) -> dict[str, float]:
    """How well a predicted curve matches the observed one."""
    error = predicted - observed
    relative = np.abs(error) / observed
    spread = float(np.sum((observed - observed.mean()) ** 2))
    return {
        "r2": 1.0 - float(np.sum(error**2)) / spread if spread > 0 else math.nan,
        "mae": float(np.mean(np.abs(error))),
        "rmse": float(np.sqrt(np.mean(error**2))),
        "final_rel_error": float(relative[-1]),
        "worst_rel_error": float(relative.max()),
    }
