"""Critical batch size from steps-to-target: the fits behind ``effsweep cbs``.

McCandlish et al. (2018): the steps S and examples E = S b to reach a target
loss trade off as (S / S_min - 1)(E / E_min - 1) = 1, that is
S(b) = S_min (1 + B_crit / b) with B_crit = E_min / S_min. As S is linear in
1 / b (intercept S_min, slope E_min), weighted least squares fits it, and a
bootstrap over the measured batch sizes gives B_crit an interval.

Tsukada and Iiduka (arXiv 2307.13831): steps K(b) = C1 b / (eps² b - C2),
so 1 / K is linear in 1 / b (intercept eps² / C1, slope -C2 / C1), and the
gradient computations K b are fewest at b* = 2 C2 / eps², twice the ratio
of slope to intercept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CriticalBatchFit:
    """S(b) = S_min (1 + B_crit / b), with a bootstrap interval for B_crit."""

    s_min: float
    e_min: float
    b_crit: float
    interval: tuple[float, float]

    def steps(self, batch_size: float | np.ndarray) -> float | np.ndarray:
        return self.s_min * (1.0 + self.b_crit / np.asarray(batch_size, dtype=float))


def fit_critical_batch(
    batch_sizes: Sequence[float], steps: Sequence[float], *, bootstrap: int = 2000, seed: int = 0
) -> CriticalBatchFit:
    """Fit S(b) = S_min + E_min / b to measured steps-to-target; B_crit = E_min / S_min.

    Example:
        >>> b = [8, 16, 32, 64, 128]
        >>> fit = fit_critical_batch(b, [100 * (1 + 32 / x) for x in b])
        >>> round(fit.b_crit, 6), round(fit.s_min, 6)
        (32.0, 100.0)
    """
    b, s = _checked(batch_sizes, steps, "steps")
    s_min, e_min = _line(1.0 / b, s)
    if s_min <= 0 or e_min <= 0:
        raise ValueError(
            f"steps do not fall with the batch size as S_min (1 + B_crit / b) does (S_min {s_min:.3g}, "
            f"E_min {e_min:.3g}); measure smaller batch sizes"
        )
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(bootstrap):
        pick = rng.integers(0, len(b), len(b))
        if len(np.unique(b[pick])) < 2:
            continue
        low, slope = _line(1.0 / b[pick], s[pick])
        if low > 0 and slope > 0:
            draws.append(slope / low)
    interval = tuple(np.percentile(draws, [2.5, 97.5])) if draws else (np.nan, np.nan)
    return CriticalBatchFit(float(s_min), float(e_min), float(e_min / s_min), (float(interval[0]), float(interval[1])))


def most_efficient_batch(batch_sizes: Sequence[float], steps: Sequence[float]) -> float:
    """b* = 2 C2 / eps² of K(b) = C1 b / (eps² b - C2), fitted to measured steps-to-target.

    Example:
        >>> b = np.array([8, 16, 32, 64, 128])
        >>> round(most_efficient_batch(b, 500 * b / (0.01 * b - 0.05)), 6)  # b* = 2 * 0.05 / 0.01
        10.0
    """
    b, k = _checked(batch_sizes, steps, "steps")
    intercept, slope = _line(1.0 / b, 1.0 / k)
    if intercept <= 0 or slope >= 0:
        raise ValueError("steps do not follow K(b) = C1 b / (eps^2 b - C2) here; measure smaller batch sizes")
    return float(2.0 * -slope / intercept)


def _checked(batch_sizes: Sequence[float], values: Sequence[float], what: str) -> tuple[np.ndarray, np.ndarray]:
    b, v = np.asarray(batch_sizes, dtype=float), np.asarray(values, dtype=float)
    if b.shape != v.shape or len(np.unique(b)) < 2:
        raise ValueError(f"need {what} at two or more distinct batch sizes, got {len(np.unique(b))}")
    if np.any(b <= 0) or np.any(v <= 0) or not np.all(np.isfinite(v)):
        raise ValueError(f"batch sizes and {what} must be positive and finite")
    return b, v


def _line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Intercept and slope of y on x, weighted by 1 / y² (relative errors count alike)."""
    design = np.column_stack([np.ones_like(x), x]) / y[:, None]
    (intercept, slope), *_ = np.linalg.lstsq(design, np.ones_like(y), rcond=None)
    return float(intercept), float(slope)
