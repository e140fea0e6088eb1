"""``power``: min(peak, b a n^c) in the tokens seen n, then an exponential decay to zero.

The Power scheduler of Shen et al. 2024, arXiv 2408.13359. See docs/schedules.md.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from trainables.schedules.base import DecaySchedule, with_warmup


class PowerSchedule(DecaySchedule):
    """The Power scheduler: ``power_a`` and ``power_c`` set the power law, ``decay_frac`` its final decay."""

    name: Literal["power"] = "power"
    power_a: float = Field(4.0, gt=0, description="power: a in min(peak, b a n^c)")
    power_c: float = Field(-0.51, lt=0, description="power: c in min(peak, b a n^c)")

    def multipliers(self, total_steps: int, *, peak: float, batch_size: int, tokens_per_step: int) -> np.ndarray:
        return power(
            np.arange(total_steps), total_steps, n_warmup=self.warmup_steps(total_steps),
            n_decay=self.decay_steps(total_steps), peak=peak, batch_size=batch_size, tokens_per_step=tokens_per_step,
            a=self.power_a, c=self.power_c,
        )  # fmt: skip


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
    return with_warmup(step, n_warmup, rate, warm_target)
