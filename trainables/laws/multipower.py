"""The Multi-Power Law of loss curves (Luo et al. 2025, arXiv 2503.12811), vectorised over steps.

It predicts the loss after every step from the learning rate of every step; it lives with the
trainables because the ``mpl_optimal`` schedule is built from it inside trials, while fitting it to
curves is the orchestrator's job. See docs/schedules.md.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import numpy as np
import torch

PARAMETERS = ("L0", "A", "alpha", "B", "C", "beta", "gamma")


@dataclass(frozen=True)
class MPLParams:
    """The law's seven parameters."""

    L0: float
    A: float
    alpha: float
    B: float
    C: float
    beta: float
    gamma: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class ScheduleTerms:
    """The parts of the law that depend only on the schedule, at the steps to predict.

    ``power_area`` is S1 + S_W at each step; ``decay(C, beta, gamma)`` is LD / B.
    """

    power_area: np.ndarray
    drops: np.ndarray
    drop_rates: np.ndarray
    areas_after_drop: np.ndarray

    def decay(self, C: float, beta: float, gamma: float) -> np.ndarray:
        if len(self.drops) == 0:
            return np.zeros(len(self.power_area))
        # A drop to a rate of zero has eta^-gamma infinite and, until a later step trains at a
        # positive rate, no area after it: its term is the limit G(0) = 0, not 0 * inf.
        x = np.where(self.areas_after_drop > 0, self.drop_rates[None, :] ** (-gamma) * self.areas_after_drop, 0.0)
        return (1.0 - (C * x + 1.0) ** (-beta)) @ self.drops

    def loss(self, params: MPLParams) -> np.ndarray:
        return (
            params.L0
            + params.A * self.power_area ** (-params.alpha)
            - params.B * self.decay(params.C, params.beta, params.gamma)
        )


def schedule_terms(lrs: np.ndarray, steps: np.ndarray) -> ScheduleTerms:
    """Precompute the law's schedule terms for per-step rates ``lrs`` (step 1 is ``lrs[0]``) at ``steps``.

    Example:
        >>> terms = schedule_terms(np.full(100, 1e-3), np.array([10, 100]))
        >>> np.round(terms.power_area, 4).tolist(), len(terms.drops)
        ([0.01, 0.1], 0)
    """
    lrs = np.asarray(lrs, dtype=np.float64)
    steps = np.asarray(steps, dtype=np.int64)
    if len(lrs) == 0 or steps.min() < 1 or steps.max() > len(lrs):
        raise ValueError(f"steps must lie in [1, {len(lrs)}] for {len(lrs)} rates")
    warmup_end = int(np.argmax(lrs))  # index of the first step at the peak
    area = np.concatenate([[0.0], np.cumsum(lrs)])  # area[t] = sum of the first t rates
    power_area = area[steps]
    drops = np.maximum(lrs[warmup_end:-1] - lrs[warmup_end + 1 :], 0.0)
    where = np.flatnonzero(drops > 0)
    k = warmup_end + 1 + where  # 0-based index of the step whose rate dropped
    after = area[steps][:, None] - area[k][None, :]  # S_k(t): area from step k+1 (1-based) to t
    after = np.where(steps[:, None] > k[None, :], after, 0.0)
    floor = 1e-12 * lrs.max()  # keeps eta^-gamma finite for a drop to zero
    return ScheduleTerms(power_area, drops[where], np.maximum(lrs[k], floor), after)


def mpl_predict(params: MPLParams, lrs: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Predicted loss after each of ``steps`` (1-based) of a run with per-step rates ``lrs``.

        L(t) = L0 + A * (S1(t) + S_W)^(-alpha) - LD(t)
        LD(t) = B * sum_k (eta_{k-1} - eta_k) * G(eta_k^(-gamma) * S_k(t)),   G(x) = 1 - (C x + 1)^(-beta)

    with S_W the area under the learning rate during warmup, S1(t) the area from
    the end of warmup to step t, and S_k(t) the area from step k to step t. Warmup
    ends where the rate first reaches its maximum; only decreases after it count
    in LD (a rise adds nothing). With decreases at every step (a cosine) a
    prediction at n points of a T-step run costs O(n T).

    Example:
        >>> p = MPLParams(L0=2.0, A=1.0, alpha=0.5, B=100.0, C=2.0, beta=0.5, gamma=0.5)
        >>> flat = mpl_predict(p, np.full(1000, 1e-3), np.array([1000]))
        >>> bool(np.isclose(flat[0], 2.0 + 1.0 * 1.0 ** -0.5))
        True
    """
    return schedule_terms(lrs, steps).loss(params)


def mpl_final_loss(params: MPLParams, lrs: torch.Tensor) -> torch.Tensor:
    """The law's loss after the last of ``lrs``, differentiable in the rates (for ``mpl_optimal_rates``).

    Equal to ``mpl_predict`` at the last step for rates that rise to their peak
    and then never rise again (a rise counts as no drop), and O(T).
    """
    area = lrs.sum()
    drops = (lrs[:-1] - lrs[1:]).clamp_min(0.0)
    after = torch.flip(torch.cumsum(torch.flip(lrs[1:], [0]), 0), [0])  # S_k(T) for the drop before step k
    x = lrs[1:].clamp_min(1e-12 * float(lrs.detach().max())) ** (-params.gamma) * after
    decay = (drops * (1.0 - (params.C * x + 1.0) ** (-params.beta))).sum()
    return params.L0 + params.A * area ** (-params.alpha) - params.B * decay


@functools.lru_cache(maxsize=32)
def mpl_optimal_rates(params: MPLParams, total_steps: int, n_warmup: int, peak: float) -> np.ndarray:
    """Per-step rates that minimise the law's final loss: a linear warmup to ``peak``, then non-increasing.

    The rates after warmup are ``peak`` times a running product of ratios in
    (0, 1), so they can only fall and never go below zero; Adam on the
    ratios' logits, from a constant schedule, minimises ``mpl_final_loss``
    (as Luo et al. optimise their schedule, with a different parametrisation).

    Example:
        >>> p = MPLParams(L0=2.0, A=0.5, alpha=0.5, B=300.0, C=2.0, beta=0.6, gamma=0.6)
        >>> rates = mpl_optimal_rates(p, 400, 8, 3e-3)
        >>> bool(rates[8] >= rates[-1] and np.all(np.diff(rates[8:]) <= 0))
        True
    """
    if not 0 <= n_warmup <= total_steps or peak <= 0:
        raise ValueError(f"need 0 <= n_warmup <= total_steps and peak > 0; got {n_warmup}, {total_steps}, {peak}")
    warmup = peak * np.arange(1, n_warmup + 1) / max(n_warmup, 1)
    n_free = total_steps - n_warmup
    if n_free <= 1:  # nothing to choose: a rate may only fall after the first step at the peak
        return np.concatenate([warmup, np.full(n_free, peak)])
    logits = torch.full((n_free - 1,), 12.0, dtype=torch.float64, requires_grad=True)  # ratios near 1
    optimizer = torch.optim.Adam([logits], lr=0.05)
    warm = torch.as_tensor(warmup, dtype=torch.float64)
    for _ in range(_OPTIMAL_ITERATIONS):
        optimizer.zero_grad()
        lrs = torch.cat([warm, _decayed(logits, peak)])
        mpl_final_loss(params, lrs).backward()
        optimizer.step()
    with torch.no_grad():
        return np.concatenate([warmup, _decayed(logits, peak).numpy()])


_OPTIMAL_ITERATIONS = 600


def _decayed(logits: torch.Tensor, peak: float) -> torch.Tensor:
    ratios = torch.sigmoid(logits)
    return peak * torch.cat([torch.ones(1, dtype=logits.dtype), torch.cumprod(ratios, 0)])
