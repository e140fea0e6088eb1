"""``wsd``: warmup, stable, then a linear, cosine or MiniCPM's exponential decay.

Hu et al. 2024, arXiv 2404.06395. See docs/schedules.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
from pydantic import Field

from trainables.schedules.base import DecaySchedule, MinLrFrac, with_warmup


class WSDSchedule(DecaySchedule):
    """Warmup, the peak, then a decay over the last ``decay_frac`` of the steps."""

    name: Literal["wsd"] = "wsd"
    min_lr_frac: MinLrFrac
    decay_shape: Literal["linear", "cosine", "exp"] = "linear"
    half_life_frac: float = Field(0.25, gt=0, le=1, description="wsd exp: half-life as a share of the decay")

    def multipliers(self, total_steps: int, *, peak: float, batch_size: int, tokens_per_step: int) -> np.ndarray:
        n_decay = self.decay_steps(total_steps)
        return wsd(
            np.arange(total_steps), total_steps, n_warmup=self.warmup_steps(total_steps), n_decay=n_decay,
            floor=self.min_lr_frac, shape=self.decay_shape, half_life=self.half_life_frac * n_decay,
        )  # fmt: skip


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
    return with_warmup(step, n_warmup, np.where(step >= decay_start, decayed, 1.0), 1.0)


_DECAY_SHAPES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": lambda p: p,
    "cosine": lambda p: 0.5 * (1.0 - np.cos(np.pi * p)),
}
