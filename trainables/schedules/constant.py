"""``constant``: warmup, then the peak until the end. See docs/schedules.md."""

from __future__ import annotations

from typing import Literal

import numpy as np

from trainables.schedules.base import WarmupSchedule, with_warmup


class ConstantSchedule(WarmupSchedule):
    """Warmup, then the peak."""

    name: Literal["constant"] = "constant"

    def multipliers(self, total_steps: int, *, peak: float, batch_size: int, tokens_per_step: int) -> np.ndarray:
        return constant(np.arange(total_steps), total_steps, n_warmup=self.warmup_steps(total_steps))


def constant(step: np.ndarray, total_steps: int, *, n_warmup: int) -> np.ndarray:
    """Warmup, then the peak until the end."""
    return with_warmup(step, n_warmup, np.ones_like(step, dtype=float), 1.0)
