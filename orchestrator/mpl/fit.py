"""Fitting the Multi-Power Law (``trainables.laws.multipower``) to loss curves.

Given (alpha, C, beta, gamma) the law is linear in L0, A and B, so the fit
optimises only those four (in log space, within bounds, from several starts,
with a Huber loss on relative residuals, about the log of the loss) and
solves L0, A and B by bounded weighted least squares at every evaluation
(variable projection). ``per_curve`` names which of L0 and A each curve
gets its own of: none (one model on one corpus, the paper's setting), A
alone (a sweep's trials on one model and one validation set: they share the
loss the law tends to, but differ in data, batch size and peak rate, hence
in how fast they approach it), or both; B, alpha, C, beta and gamma are
always shared. Each curve's own L0 is poorly pinned by a curve that is still
falling (L0 and A trade off), so a sweep shares it. A prior (an earlier
fit) pulls the four nonlinear parameters towards it, so a sweep can fit
early curves that have not decayed yet, and is the fit's only start.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import lsq_linear

from orchestrator.curves import Curve, CurveError, LawFit, best_of_starts
from trainables.laws.multipower import MPLParams, ScheduleTerms, schedule_terms

NONLINEAR = ("alpha", "C", "beta", "gamma")
# Wide for alpha; for the decay shape, the range of the paper's fits and a bit beyond. Left free,
# beta and C run to zero on short real curves (a degenerate, linear decay term) and extrapolate badly.
_BOUNDS = {"alpha": (1e-3, 3.0), "C": (0.1, 100.0), "beta": (0.3, 3.0), "gamma": (0.3, 1.0)}
_STARTS = [
    {"alpha": a, "C": c, "beta": b, "gamma": g}
    for a in (0.3, 0.7)
    for c in (0.5, 5.0)
    for b in (0.4, 1.5)
    for g in (0.3, 0.7)
]


@dataclass
class MPLFit(LawFit):
    """Fitted parameters: the shared ones, and each curve's L0 and A (its own or the shared ones)."""

    shared: dict[str, float]
    per_curve: dict[str, tuple[float, float]] = field(default_factory=dict)
    relative_rmse: float = 0.0

    @classmethod
    def fit_curves(cls, curves: Sequence[Curve]) -> MPLFit:
        return fit_mpl(curves, per_curve=())

    def params(self, name: str | None = None) -> MPLParams:
        """The law's parameters for curve ``name`` (or the shared L0 and A when fitted jointly)."""
        if name is not None and name in self.per_curve:
            l0, a = self.per_curve[name]
        elif "A" in self.shared:
            l0, a = self.shared["L0"], self.shared["A"]
        else:
            raise KeyError(f"no L0 and A for curve {name!r}: it was not fitted and none are shared")
        return MPLParams(L0=l0, A=a, **{k: self.shared[k] for k in ("alpha", "B", "C", "beta", "gamma")})

    def predict(self, lrs: np.ndarray, steps: np.ndarray, name: str | None = None) -> np.ndarray:
        return schedule_terms(lrs, steps).loss(self.params(name))

    def to_json(self) -> dict[str, Any]:
        return {"shared": self.shared, "per_curve": {k: list(v) for k, v in self.per_curve.items()}} | {
            "relative_rmse": self.relative_rmse
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MPLFit:
        return cls(dict(data["shared"]), {k: tuple(v) for k, v in data["per_curve"].items()}, data["relative_rmse"])

    @classmethod
    def read(cls, path: Path) -> MPLFit:
        try:
            return cls.from_json(json.loads(path.read_text())["fit"])
        except FileNotFoundError:
            raise CurveError(f"{path}: no such fit file") from None
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise CurveError(f"{path}: not an MPL fit written by 'effsweep mpl fit --json' ({exc})") from None


def read_fit(path: Path) -> MPLFit:
    """An MPL fit, from ``effsweep mpl fit --json`` or a sweep's folder (its pruner's shared fit)."""
    path = Path(path)
    if path.is_dir():
        return MPLFit.from_json(_sweep_state(path)["fit"])
    return MPLFit.read(path)


def read_law(path: Path) -> MPLParams:
    """The law an ``mpl_optimal`` schedule optimises, from ``effsweep mpl fit --json`` or a sweep's folder.

    A sweep fits L0 and A per trial; its law takes those of the trial with
    the lowest final loss.
    """
    path = Path(path)
    if not path.is_dir():
        return MPLFit.read(path).params()
    state = _sweep_state(path)
    fit = MPLFit.from_json(state["fit"])
    tracks = state["tracks"].items()
    finals = {tid: t["final"] for tid, t in tracks if t["final"] is not None and tid in fit.per_curve}
    return fit.params(min(finals, key=finals.get) if finals else None)


def _sweep_state(path: Path) -> dict[str, Any]:
    state_path = path / "mpl" / "state.json"
    if not state_path.is_file():
        raise CurveError(f"{path}: not a sweep folder with an MPL fit (no {state_path}; use scheduler: mpl)")
    state = json.loads(state_path.read_text())
    if not state.get("fit"):
        raise CurveError(f"{state_path}: the sweep never fitted the law (too few trials completed)")
    return state


def fit_mpl(
    curves: Sequence[Curve],
    *,
    per_curve: tuple[str, ...],
    prior: MPLFit | None = None,
    prior_strength: float = 1.0,
    huber_scale: float = 0.005,
    bounds: Mapping[str, tuple[float, float]] | None = None,
) -> MPLFit:
    """Fit the law to ``curves`` (see the module docstring); the best of several starts.

    ``per_curve``: which of ``"L0"`` and ``"A"`` each curve gets its own of;
    a per-curve L0 needs a per-curve A. ``bounds`` replaces the default
    (lower, upper) of any of alpha, C, beta and gamma; equal bounds hold one
    fixed (to profile the fit over it, as ``benchmarks/mpl_profile.py`` does).
    """
    if not curves:
        raise ValueError("fit_mpl needs at least one curve")
    if set(per_curve) not in (set(), {"A"}, {"L0", "A"}):
        raise ValueError(f"per_curve must be (), ('A',) or ('L0', 'A'), got {per_curve!r}")
    limits = _checked_bounds(bounds or {})
    terms = [schedule_terms(c.lrs, c.steps) for c in curves]
    observed = np.concatenate([c.losses for c in curves])
    solve = _LinearPart(terms, [c.losses for c in curves], per_curve)
    lower = np.log([limits[k][0] for k in NONLINEAR])
    upper = np.log([limits[k][1] for k in NONLINEAR])
    fixed = upper - lower < 1e-6  # least_squares needs lower < upper: a fixed parameter gets a sliver of room
    lower, upper = np.where(fixed, lower - 1e-6, lower), np.where(fixed, upper + 1e-6, upper)
    centre = np.log([prior.shared[k] for k in NONLINEAR]) if prior else None

    def residuals(z: np.ndarray) -> np.ndarray:
        predicted, _ = solve(dict(zip(NONLINEAR, np.exp(z), strict=True)))
        fit = (predicted - observed) / observed
        if centre is None:
            return fit
        return np.concatenate([fit, math.sqrt(prior_strength) * huber_scale * (z - centre)])

    # A sweep refits after every completed trial and its shape moves little from one fit to the
    # next: the prior alone is the start (each start costs a full optimisation).
    starts = [centre] if centre is not None else [np.log([s[k] for k in NONLINEAR]) for s in _STARTS]
    best = best_of_starts(residuals, starts, lower, upper, huber_scale=huber_scale, max_nfev=200)
    nonlinear = {k: float(v) for k, v in zip(NONLINEAR, np.exp(best), strict=True)}
    predicted, linear = solve(nonlinear)
    rmse = float(np.sqrt(np.mean(((predicted - observed) / observed) ** 2)))
    shared = {**nonlinear, "B": linear["B"]}
    pairs = linear["curves"]
    if not per_curve:
        return MPLFit({**shared, "L0": pairs[0][0], "A": pairs[0][1]}, {}, rmse)
    if "L0" not in per_curve:
        shared["L0"] = pairs[0][0]
    return MPLFit(shared, {c.name: pairs[i] for i, c in enumerate(curves)}, rmse)


def _checked_bounds(bounds: Mapping[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    unknown = sorted(set(bounds) - set(NONLINEAR))
    if unknown:
        raise ValueError(f"bounds may only be given for {NONLINEAR}, got {unknown}")
    for name, (low, high) in bounds.items():
        if not 0 < low <= high:
            raise ValueError(f"bounds for {name} must satisfy 0 < lower <= upper, got ({low}, {high})")
    return {**_BOUNDS, **bounds}


class _LinearPart:
    """Solves L0, A (per curve or shared) and B for given nonlinear parameters, weighting by 1 / loss."""

    def __init__(self, terms: list[ScheduleTerms], losses: list[np.ndarray], per_curve: tuple[str, ...]) -> None:
        self.terms = terms
        # The design's columns: L0 (one, or one per curve), then A (likewise), then B; curve i's are these.
        own = range(len(terms))
        self.l0_column = list(own) if "L0" in per_curve else [0] * len(terms)
        self.a_column = [max(self.l0_column) + 1 + (i if "A" in per_curve else 0) for i in own]
        self.weights = 1.0 / np.concatenate(losses)
        self.target = np.ones_like(self.weights)  # observed / observed
        self.sizes = [len(t.power_area) for t in terms]

    def __call__(self, nonlinear: dict[str, float]) -> tuple[np.ndarray, dict[str, Any]]:
        design = np.zeros((sum(self.sizes), max(self.a_column) + 2))
        row = 0
        for i, (t, size) in enumerate(zip(self.terms, self.sizes, strict=True)):
            design[row : row + size, self.l0_column[i]] = 1.0
            design[row : row + size, self.a_column[i]] = t.power_area ** (-nonlinear["alpha"])
            design[row : row + size, -1] = -t.decay(nonlinear["C"], nonlinear["beta"], nonlinear["gamma"])
            row += size
        # Curves whose rate never decreases (or not yet, within the rows fitted) leave B's column
        # empty: B is then 0, and solving for it would hand the solver a singular system.
        solved = design if design[:, -1].any() else design[:, :-1]
        weighted = solved * self.weights[:, None]
        bounds = (np.zeros(solved.shape[1]), np.full(solved.shape[1], np.inf))
        solution = np.zeros(design.shape[1])
        solution[: solved.shape[1]] = lsq_linear(weighted, self.target, bounds=bounds).x
        pairs = [(float(solution[l0]), float(solution[a])) for l0, a in zip(self.l0_column, self.a_column, strict=True)]
        return design @ solution, {"curves": pairs, "B": float(solution[-1])}


# Candidate first steps for choose_min_step, as shares of the shortest fitted curve.
_MIN_STEP_SHARES = (0.0, 0.05, 0.1, 0.2, 0.25, 1 / 3, 0.5)
_EARLY_SHARE = 0.6  # of each curve, fitted to predict the rest


def choose_min_step(curves: Sequence[Curve]) -> int:
    """The first step to fit from, chosen on the fitted curves alone.

    The first few hundred steps of a run leave a transient (the loss of a
    fresh model falls faster than any power law) whose length, in steps,
    depends on the model, so no one cut suits every run. For each candidate
    (a share of the shortest curve: 0, 5, 10, 20, 25, 33 or 50%) the law is
    fitted to every curve's rows from it up to 60% of the curve and predicts
    the curves' last losses, which is what a fit is for: extrapolation. The
    candidate with the least mean relative error wins. The decay is only
    learnt from rates that decrease within those 60% (a cosine's do).

    Example:
        >>> from trainables.laws.multipower import MPLParams, mpl_predict
        >>> law = MPLParams(L0=2.0, A=0.6, alpha=0.5, B=300.0, C=2.0, beta=0.6, gamma=0.6)
        >>> steps = np.arange(100, 3001, 100)
        >>> def curve(name, lrs):  # the law, plus a transient that has faded by step 1,000
        ...     losses = mpl_predict(law, lrs, steps) + np.exp(-steps / 150.0)
        ...     return Curve.from_log(name, steps, lrs[steps - 1], losses)
        >>> flat, drop = np.full(3000, 3e-3), np.r_[np.full(1200, 3e-3), np.full(1800, 3e-4)]
        >>> choose_min_step([curve("constant", flat), curve("two_step", drop)]) >= 600
        True
    """
    shortest = min(int(c.steps[-1]) for c in curves)
    errors: dict[int, float] = {}
    for share in _MIN_STEP_SHARES:
        start = int(share * shortest)
        early = [c.between(start, _EARLY_SHARE * c.steps[-1]) for c in curves]
        if any(len(e.steps) < 3 for e in early):
            continue
        fit = fit_mpl(early, per_curve=())
        last = [fit.predict(c.lrs, c.steps[-1:])[0] / c.losses[-1] - 1.0 for c in curves]
        errors[start] = float(np.mean(np.abs(last)))
    if not errors:
        raise CurveError(
            f"--min-step auto needs at least 3 rows in the first {_EARLY_SHARE:.0%} of every fitted curve;"
            " give --min-step N"
        )
    return min(errors, key=errors.__getitem__)
