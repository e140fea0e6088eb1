"""effsweep's convergence-and-escape law of loss curves, after Opt-Laws (Xie et al., arXiv 2409.04777).

Opt-Laws predict the final loss from features of the learning-rate schedule
derived from an SDE view of training: how far it converges and how likely it
escapes a basin. Only the paper's abstract could be read, so the features and
the law's form here are effsweep's own design in that spirit, written out
and argued in docs/schedules.md ("Opt-Laws"), not the paper's equations.

With S(t) the learning-rate area up to step t (the SDE's time):

    L(t) = L_inf + A * S(t)^(-alpha) + B * N(t) - D * P(t)

- convergence, ``S^(-alpha)``: progress of the drift term in SDE time;
- noise, ``N``: the excess loss the gradient noise holds the iterate at, the
  rate itself once settled (temperature eta / B), relaxing towards each new
  rate at ``kappa`` per unit of area (``dN/dS = kappa * (eta - N)``);
- escape, ``P = 1 - exp(-sum_s eta_s * exp(-epsilon / eta_s))``: the chance
  of having left a sharp basin, Kramers' rate ``exp(-barrier / temperature)``
  integrated over SDE time; high rates escape, low rates cannot.

The law is linear in L_inf, A, B and D (all non-negative) given alpha, kappa
and epsilon, which the fit searches (``orchestrator.optlaws.fit``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

NONLINEAR = ("alpha", "kappa", "epsilon")
LINEAR = ("L_inf", "A", "B", "D")


@dataclass(frozen=True)
class OptLawParams:
    """The law's seven parameters (see the module docstring)."""

    L_inf: float
    A: float
    alpha: float
    B: float
    kappa: float
    D: float
    epsilon: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class ScheduleFeatures:
    """The schedule's features at the steps to predict, for given nonlinear parameters: the law's design columns."""

    area: np.ndarray
    noise: np.ndarray
    escape: np.ndarray

    def columns(self, alpha: float) -> np.ndarray:
        """One row per step: the coefficients of L_inf, A, B and D."""
        return np.column_stack([np.ones_like(self.area), self.area ** (-alpha), self.noise, -self.escape])

    def loss(self, params: OptLawParams) -> np.ndarray:
        linear = np.array([params.L_inf, params.A, params.B, params.D])
        return self.columns(params.alpha) @ linear


def schedule_features(lrs: np.ndarray, steps: np.ndarray, kappa: float, epsilon: float) -> ScheduleFeatures:
    """The features of per-step rates ``lrs`` (step 1 is ``lrs[0]``) at ``steps`` (1-based).

    Example:
        >>> f = schedule_features(np.full(1000, 1e-2), np.array([1000]), kappa=50.0, epsilon=0.05)
        >>> round(float(f.area[0]), 6), round(float(f.noise[0]), 6)  # settled: the noise is the rate
        (10.0, 0.01)
    """
    lrs = np.asarray(lrs, dtype=np.float64)
    steps = np.asarray(steps, dtype=np.int64)
    if len(lrs) == 0 or steps.min() < 1 or steps.max() > len(lrs):
        raise ValueError(f"steps must lie in [1, {len(lrs)}] for {len(lrs)} rates")
    if kappa <= 0 or epsilon <= 0:
        raise ValueError(f"kappa and epsilon must be positive, got kappa={kappa}, epsilon={epsilon}")
    area = np.cumsum(lrs)
    # N after step t is sum_s eta_s * (1 - exp(-kappa eta_s)) * exp(-kappa (S_t - S_s)): the exact solution of
    # the relaxation for a rate held over each step. Accumulated in logs, since exp(kappa S) overflows.
    with np.errstate(divide="ignore"):
        log_weights = np.log(lrs) + np.log(-np.expm1(-kappa * lrs)) + kappa * area
        noise = np.exp(np.logaddexp.accumulate(log_weights) - kappa * area)
        hazard = np.where(lrs > 0, lrs * np.exp(-epsilon / np.where(lrs > 0, lrs, 1.0)), 0.0)
    escape = -np.expm1(-np.cumsum(hazard))
    at = steps - 1
    return ScheduleFeatures(area[at], noise[at], escape[at])


def optlaw_predict(params: OptLawParams, lrs: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Predicted loss after each of ``steps`` (1-based) of a run with per-step rates ``lrs``.

    Example:
        >>> p = OptLawParams(L_inf=2.0, A=1.0, alpha=0.5, B=10.0, kappa=50.0, D=0.1, epsilon=0.05)
        >>> decayed = np.r_[np.full(800, 1e-2), np.full(200, 1e-3)]
        >>> bool(optlaw_predict(p, decayed, [1000])[0] < optlaw_predict(p, np.full(1000, 1e-2), [1000])[0])
        True
    """
    return schedule_features(lrs, np.asarray(steps), params.kappa, params.epsilon).loss(params)
