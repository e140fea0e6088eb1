"""AutoLRS's search over one stage's rate: a Gaussian process on the log rate, asked by a lower confidence bound."""

from __future__ import annotations

import math

import numpy as np

_LENGTH_SCALES = (0.05, 0.1, 0.2, 0.4, 0.8)  # in the unit interval of the log rate; chosen by marginal likelihood
_NOISE = 1e-3
_GRID = np.linspace(0.0, 1.0, 513)


def _matern52(a: np.ndarray, b: np.ndarray, length: float) -> np.ndarray:
    r = np.abs(a[:, None] - b[None, :]) * math.sqrt(5.0) / length
    return (1.0 + r + r * r / 3.0) * np.exp(-r)


class RateSearch:
    """Candidate rates in [low, high], log-uniform, each told its forecast loss; ``best`` is the lowest forecast.

    The first candidate is drawn from ``rng``; each later one minimises mu - kappa sigma of a
    Matern-5/2 Gaussian process (normalised losses, length scale by marginal likelihood) over a grid,
    among points not tried yet. A large ``kappa`` spreads the candidates over the range, a small one
    follows the fitted mean.

    Example:
        >>> search = RateSearch(1e-4, 1e-1, kappa=2.0, rng=np.random.default_rng(0))
        >>> for _ in range(10):
        ...     lr = search.ask()
        ...     search.tell(lr, (math.log10(lr) + 2.5) ** 2)  # best at 10^-2.5
        >>> round(math.log10(search.best), 1)
        -2.5
    """

    def __init__(self, low: float, high: float, kappa: float, rng: np.random.Generator) -> None:
        if not 0 < low < high or kappa < 0:
            raise ValueError(f"need 0 < low < high and kappa >= 0, got {low}, {high}, {kappa}")
        self._log_low, self._log_span = math.log(low), math.log(high) - math.log(low)
        self._kappa = kappa
        self._rng = rng
        self.tried: list[float] = []  # in the unit interval
        self.losses: list[float] = []

    def ask(self) -> float:
        if not self.tried:
            return self._rate(float(self._rng.uniform()))
        mean, std = self._posterior(_GRID)
        score = mean - self._kappa * std
        taken = np.min(np.abs(_GRID[:, None] - np.array(self.tried)[None, :]), axis=1) < 0.5 / (len(_GRID) - 1)
        score[taken] = np.inf
        return self._rate(float(_GRID[int(np.argmin(score))]))

    def tell(self, rate: float, loss: float) -> None:
        self.tried.append((math.log(rate) - self._log_low) / self._log_span)
        self.losses.append(loss)

    @property
    def best(self) -> float:
        """The tried rate with the lowest forecast loss."""
        if not self.tried:
            raise ValueError("no rate was tried yet")
        return self._rate(self.tried[int(np.argmin(self.losses))])

    def state_dict(self) -> dict:
        return {"tried": list(self.tried), "losses": list(self.losses), "rng": self._rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.tried, self.losses = list(state["tried"]), list(state["losses"])
        self._rng.bit_generator.state = state["rng"]

    def _rate(self, unit: float) -> float:
        return math.exp(self._log_low + unit * self._log_span)

    def _posterior(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.array(self.tried)
        y = np.array(self.losses, dtype=float)
        finite = np.isfinite(y)
        y[~finite] = y[finite].max(initial=0.0) + 1.0  # a diverged exploration: worse than any that did not
        spread = float(np.std(y)) or 1.0
        y = (y - float(np.mean(y))) / spread
        best_fit = None
        for length in _LENGTH_SCALES:
            k = _matern52(x, x, length) + _NOISE * np.eye(len(x))
            chol = np.linalg.cholesky(k)
            alpha = np.linalg.solve(chol.T, np.linalg.solve(chol, y))
            evidence = -0.5 * y @ alpha - np.sum(np.log(np.diag(chol)))
            if best_fit is None or evidence > best_fit[0]:
                best_fit = (evidence, length, chol, alpha)
        _, length, chol, alpha = best_fit
        cross = _matern52(points, x, length)
        mean = cross @ alpha
        v = np.linalg.solve(chol, cross.T)
        std = np.sqrt(np.maximum(1.0 - np.sum(v * v, axis=0), 1e-12))
        return mean, std
