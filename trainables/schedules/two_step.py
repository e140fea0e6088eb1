"""``two_step``: the peak, then one drop to a fraction of it (step decay). See docs/schedules.md."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from trainables.schedules.base import WarmupSchedule, with_warmup


class TwoStepSchedule(WarmupSchedule):
    """Warmup, the peak until ``step_frac`` of the steps, then ``step_factor`` times the peak."""

    name: Literal["two_step"] = "two_step"
    step_frac: float = Field(0.5, gt=0, lt=1, description="two_step: share of steps before the drop")
    step_factor: float = Field(0.1, gt=0, lt=1, description="two_step: rate after the drop / peak")

    def multipliers(self, total_steps: int, *, peak: float, batch_size: int, tokens_per_step: int) -> np.ndarray:
        n_warmup = self.warmup_steps(total_steps)
        n_drop = max(round(self.step_frac * total_steps), n_warmup)
        return two_step(np.arange(total_steps), total_steps, n_warmup=n_warmup, n_drop=n_drop, factor=self.step_factor)


def two_step(step: np.ndarray, total_steps: int, *, n_warmup: int, n_drop: int, factor: float) -> np.ndarray:
    """Step decay: the peak until step ``n_drop``, then ``factor`` times the peak to the end."""
    return with_warmup(step, n_warmup, np.where(step >= n_drop, factor, 1.0), 1.0)
