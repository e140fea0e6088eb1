"""Learning-rate schedules as pure, vectorised functions of the step.

Step ``s`` (0-based) is the rate of the ``s+1``-th update. Every schedule
takes the whole step array at once and returns multiples of the peak rate, so
a trial's planned rates are known before training starts: the MPL pruner
predicts a trial's loss curve from them, and the trainer reads its rate from
them. Linear warmup reaches its target on the last warmup step; a run with no
warmup starts there.

Families (``trainables.config.ScheduleConfig`` holds their parameters):

- ``constant``; ``cosine`` to a floor;
- ``wsd``: warmup, stable, decay (linear, cosine, or MiniCPM's exponential
  0.5^(s / half-life)), Hu et al. 2024, arXiv 2404.06395;
- ``power``: min(peak, b * a * n^c) with n the tokens seen and b the batch
  size, then an exponential decay to zero (Shen et al. 2024, arXiv 2408.13359);
- ``two_step``: the peak, then one drop to a fraction of it (step decay);
- ``inverse_power``: (1 + t / t0)^(-beta);
- ``one_cycle``: up from peak/div, down to peak/(div * final_div), with cyclic
  momentum (Smith and Topin 2017, arXiv 1708.07120; PyTorch's OneCycleLR);
- ``explore_converge``: a high constant rate, then an inverse power decay;
- ``mpl_optimal``: the rates that minimise a fitted Multi-Power Law's final
  loss (``trainables.multipower.mpl_optimal_rates``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def warmup_steps(total_steps: int, warmup_frac: float) -> int:
    return round(warmup_frac * total_steps)


def _with_warmup(step: np.ndarray, n_warmup: int, after: np.ndarray, target: float | None = None) -> np.ndarray:
    """Linear warmup from 0 to ``target`` (default: the value after warmup) over ``n_warmup`` steps."""
    reach = after[min(n_warmup, len(after) - 1)] if target is None and len(after) else target
    ramp = (step + 1) / max(n_warmup, 1) * (reach if reach is not None else 1.0)
    return np.where(step < n_warmup, ramp, after)


def constant(step: np.ndarray, total_steps: int, *, n_warmup: int) -> np.ndarray:
    """Warmup, then the peak until the end."""
    return _with_warmup(step, n_warmup, np.ones_like(step, dtype=float), 1.0)


def cosine(step: np.ndarray, total_steps: int, *, n_warmup: int, floor: float) -> np.ndarray:
    """Warmup, then a half cosine from the peak (first step after warmup) to ``floor`` (last step)."""
    progress = np.clip((step - n_warmup) / max(total_steps - n_warmup - 1, 1), 0.0, 1.0)
    return _with_warmup(step, n_warmup, floor + (1.0 - floor) * 0.5 * (1.0 + np.cos(np.pi * progress)), 1.0)


def wsd(
    step: np.ndarray,
    total_steps: int,
    *,
    n_warmup: int,
    n_decay: int,
    floor: float,
    shape: str,
    half_life: float,
) -> np.ndarray:
    """Warmup-stable-decay: the peak until the last ``n_decay`` steps.

    ``linear`` and ``cosine`` fall to ``floor`` on the last step; ``exp`` is
    MiniCPM's 0.5^(s / half_life) for s steps into the decay, so it ends at
    0.5^(n_decay / half_life) whatever the floor.
    """
    decay_start = max(total_steps - n_decay, n_warmup)
    into = np.clip(step - decay_start + 1, 0, None)
    if shape == "exp":
        decayed = 0.5 ** (into / max(half_life, 1e-12))
    else:
        progress = np.clip(into / max(total_steps - decay_start, 1), 0.0, 1.0)
        decayed = 1.0 - (1.0 - floor) * _DECAY_SHAPES[shape](progress)
    return _with_warmup(step, n_warmup, np.where(step >= decay_start, decayed, 1.0), 1.0)


_DECAY_SHAPES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": lambda p: p,
    "cosine": lambda p: 0.5 * (1.0 - np.cos(np.pi * p)),
}


def power(
    step: np.ndarray,
    total_steps: int,
    *,
    n_warmup: int,
    n_decay: int,
    peak: float,
    batch_size: int,
    tokens_per_step: int,
    a: float,
    c: float,
) -> np.ndarray:
    """The Power scheduler: min(peak, b * a * n^c) as a multiple of ``peak``.

    n counts the tokens seen after the step, b is the batch size in
    sequences. Warmup ramps linearly to the power value at its end; the last
    ``n_decay`` steps fall exponentially from the value where decay starts to
    zero (IBM's ``ExponentialScheduler`` shape with a zero final factor).
    """
    tokens = (step + 1.0) * tokens_per_step
    rate = np.minimum(1.0, batch_size * a * tokens**c / peak)
    decay_start = max(total_steps - n_decay, n_warmup)
    if n_decay > 0:
        into = np.clip(step - decay_start + 1, 0, n_decay) / n_decay
        fall = (np.exp(1.0 - into) - 1.0) / (np.e - 1.0)  # 1 at the start of decay, 0 at its end
        start_rate = min(1.0, batch_size * a * (decay_start * tokens_per_step) ** c / peak) if decay_start else 1.0
        rate = np.where(step >= decay_start, start_rate * fall, rate)
    warm_target = min(1.0, batch_size * a * (max(n_warmup, 1) * tokens_per_step) ** c / peak)
    return _with_warmup(step, n_warmup, rate, warm_target)


def two_step(step: np.ndarray, total_steps: int, *, n_warmup: int, n_drop: int, factor: float) -> np.ndarray:
    """Step decay: the peak until step ``n_drop``, then ``factor`` times the peak to the end."""
    return _with_warmup(step, n_warmup, np.where(step >= n_drop, factor, 1.0), 1.0)


def inverse_power(step: np.ndarray, total_steps: int, *, n_warmup: int, t0: float, beta: float) -> np.ndarray:
    """(1 + t / t0)^(-beta), t counting steps after warmup."""
    after = (1.0 + np.clip(step - n_warmup, 0, None) / t0) ** (-beta)
    return _with_warmup(step, n_warmup, after, 1.0)


def explore_converge(
    step: np.ndarray, total_steps: int, *, n_warmup: int, n_explore: int, t0: float, beta: float
) -> np.ndarray:
    """A high constant rate for ``n_explore`` steps after warmup, then (1 + t / t0)^(-beta)."""
    converge_start = n_warmup + n_explore
    after = (1.0 + np.clip(step - converge_start + 1, 0, None) / t0) ** (-beta)
    return _with_warmup(step, n_warmup, np.where(step >= converge_start, after, 1.0), 1.0)


def one_cycle(step: np.ndarray, total_steps: int, *, rise_frac: float, div: float, final_div: float) -> np.ndarray:
    """One cycle (PyTorch's OneCycleLR, cosine annealing): peak/div up to the peak, down to peak/(div*final_div)."""
    return _two_phase_cosine(step, total_steps, rise_frac, 1.0 / div, 1.0, 1.0 / (div * final_div))


def one_cycle_momentum(step: np.ndarray, total_steps: int, *, rise_frac: float, low: float, high: float) -> np.ndarray:
    """The momentum that goes with ``one_cycle``: high to low while the rate rises, back while it falls."""
    return _two_phase_cosine(step, total_steps, rise_frac, high, low, high)


def _two_phase_cosine(
    step: np.ndarray, total_steps: int, rise_frac: float, start: float, middle: float, end: float
) -> np.ndarray:
    turn = max(round(rise_frac * total_steps) - 1, 1)
    last = max(total_steps - 1, turn + 1)
    up = np.clip(step / turn, 0.0, 1.0)
    down = np.clip((step - turn) / (last - turn), 0.0, 1.0)
    rising = middle + (start - middle) / 2 * (1 + np.cos(np.pi * up))
    falling = end + (middle - end) / 2 * (1 + np.cos(np.pi * down))
    return np.where(step <= turn, rising, falling)
