"""AutoLRS's forecast: an exploration's losses fitted by a decaying exponential, read off further on."""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize_scalar

# b = -exp(beta): decay rates from about 6e-6 to 20 a step cover every exploration length in use.
_BETA_BOUNDS = (-12.0, 3.0)


def exponential_forecast(losses: np.ndarray, horizon: float) -> float:
    """The loss at step ``horizon`` of the curve L(x) = a exp(b x) + c (b < 0) fitted to ``losses`` at x = 0, 1, ...

    For each decay rate b the best a and c are a linear least-squares fit; b itself is found by a bounded
    scalar search. Non-finite losses forecast infinity (the exploration diverged).

    Example:
        >>> x = np.arange(20.0)
        >>> round(exponential_forecast(2.0 * np.exp(-0.1 * x) + 1.0, horizon=200), 4)
        1.0
    """
    losses = np.asarray(losses, dtype=float)
    if len(losses) < 3:
        raise ValueError(f"a forecast needs at least 3 losses, got {len(losses)}")
    if not np.all(np.isfinite(losses)):
        return math.inf
    x = np.arange(len(losses), dtype=float)

    def fitted(beta: float) -> tuple[np.ndarray, float]:
        basis = np.stack([np.exp(-math.exp(beta) * x), np.ones_like(x)], axis=1)
        coefficients, *_ = np.linalg.lstsq(basis, losses, rcond=None)
        return coefficients, float(np.sum((basis @ coefficients - losses) ** 2))

    beta = minimize_scalar(lambda b: fitted(b)[1], bounds=_BETA_BOUNDS, method="bounded").x
    (a, c), _ = fitted(beta)
    return float(a * math.exp(-math.exp(beta) * horizon) + c)
