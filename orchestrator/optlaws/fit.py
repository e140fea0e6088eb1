"""Fitting the convergence-and-escape law (``orchestrator.optlaws.law``) to loss curves.

As for the Multi-Power Law (``orchestrator.mpl.fit``): the fit searches the
nonlinear parameters (alpha, kappa, epsilon; in log space, within bounds,
from several starts, Huber loss on relative residuals) and solves the linear
ones (L_inf, A, B, D, all non-negative) by weighted least squares at every
evaluation. One set of parameters for all curves: one model on one corpus.
See docs/schedules.md ("Opt-Laws").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import lsq_linear

from orchestrator.curves import Curve, LawFit, best_of_starts
from orchestrator.optlaws.law import LINEAR, NONLINEAR, OptLawParams, schedule_features

# kappa in units of 1 / learning-rate area (a run at 3e-3 for 6,000 steps has area 18); epsilon in units of a
# learning rate (the barrier over the rate is what the escape rate is exponential in).
BOUNDS = {"alpha": (1e-3, 3.0), "kappa": (0.1, 1e4), "epsilon": (1e-6, 1.0)}
_STARTS = [{"alpha": a, "kappa": k, "epsilon": e} for a in (0.3, 1.0) for k in (3.0, 100.0) for e in (1e-3, 1e-2)]


@dataclass(frozen=True)
class OptLawFit(LawFit):
    """The fitted law, how closely it fits, and the range of peak rates it was fitted on."""

    params: OptLawParams
    relative_rmse: float
    fitted_peak_lrs: tuple[float, float]

    @classmethod
    def fit_curves(cls, curves: Sequence[Curve]) -> OptLawFit:
        return fit_optlaw(curves)

    def predict(self, lrs: np.ndarray, steps: np.ndarray) -> np.ndarray:
        features = schedule_features(lrs, steps, self.params.kappa, self.params.epsilon)
        return features.loss(self.params)

    def fitted_peak_range(self) -> tuple[float, float]:
        return self.fitted_peak_lrs

    def to_json(self) -> dict[str, Any]:
        return {
            "params": self.params.as_dict(),
            "relative_rmse": self.relative_rmse,
            "fitted_peak_lrs": list(self.fitted_peak_lrs),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> OptLawFit:
        low, high = data["fitted_peak_lrs"]
        return cls(OptLawParams(**data["params"]), float(data["relative_rmse"]), (float(low), float(high)))


def fit_optlaw(
    curves: Sequence[Curve], *, huber_scale: float = 0.005, bounds: Mapping[str, tuple[float, float]] | None = None
) -> OptLawFit:
    """One set of the law's parameters for ``curves``: the best of several starts.

    Example:
        >>> from orchestrator.optlaws.law import optlaw_predict
        >>> truth = OptLawParams(L_inf=2.0, A=0.5, alpha=0.6, B=40.0, kappa=30.0, D=0.2, epsilon=5e-3)
        >>> steps = np.arange(100, 3001, 100)
        >>> def curve(name, lrs):
        ...     return Curve(name, lrs, steps, optlaw_predict(truth, lrs, steps))
        >>> flat, drop = np.full(3000, 3e-3), np.r_[np.full(1500, 6e-3), np.full(1500, 6e-4)]
        >>> fit = fit_optlaw([curve("flat", flat), curve("drop", drop), curve("low", flat / 3)])
        >>> fit.relative_rmse < 1e-4, round(fit.params.alpha, 3), round(fit.params.kappa, 2)
        (True, 0.6, 30.0)
    """
    if not curves:
        raise ValueError("fit_optlaw needs at least one curve")
    limits = {**BOUNDS, **(bounds or {})}
    unknown = sorted(set(limits) - set(NONLINEAR))
    if unknown:
        raise ValueError(f"bounds may only be given for {NONLINEAR}, got {unknown}")
    observed = np.concatenate([c.losses for c in curves])
    weights = 1.0 / observed
    lower = np.log([limits[k][0] for k in NONLINEAR])
    upper = np.log([limits[k][1] for k in NONLINEAR])

    def solve(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        alpha, kappa, epsilon = np.exp(z)
        design = np.vstack([schedule_features(c.lrs, c.steps, kappa, epsilon).columns(alpha) for c in curves])
        # A feature that is (all but) zero on every row (no escape at these rates) leaves its coefficient free;
        # it is solved without that column and reported as 0.
        used = np.abs(design).max(axis=0) > 1e-9
        linear = np.zeros(design.shape[1])
        weighted = design[:, used] * weights[:, None]
        linear[used] = lsq_linear(weighted, np.ones_like(weights), bounds=(0.0, np.inf)).x
        return design @ linear, linear

    def residuals(z: np.ndarray) -> np.ndarray:
        return (solve(z)[0] - observed) / observed

    starts = [np.log([start[k] for k in NONLINEAR]) for start in _STARTS]
    best = best_of_starts(residuals, starts, lower, upper, huber_scale=huber_scale, max_nfev=300)
    predicted, linear = solve(best)
    values = dict(zip(NONLINEAR, map(float, np.exp(best)), strict=True)) | dict(
        zip(LINEAR, map(float, linear), strict=True)
    )
    rmse = float(np.sqrt(np.mean(((predicted - observed) / observed) ** 2)))
    peaks = [float(c.lrs.max()) for c in curves]
    return OptLawFit(OptLawParams(**values), rmse, (min(peaks), max(peaks)))
