"""``cosine``: warmup, then a half cosine from the peak down to a floor. See docs/schedules.md."""

from __future__ import annotations

from typing import Literal

import numpy as np

from trainables.schedules.base import MinLrFrac, WarmupSchedule, with_warmup


class CosineSchedule(WarmupSchedule):
    """Warmup, then a half cosine to ``min_lr_frac`` of the peak."""

    name: Literal["cosine"] = "cosine"
    min_lr_frac: MinLrFrac

    def multipliers(self, total_steps: int, *, peak: float, batch_size: int, tokens_per_step: int) -> np.ndarray:
        n_warmup = self.warmup_steps(total_steps)
        return cosine(np.arange(total_steps), total_steps, n_warmup=n_warmup, floor=self.min_lr_frac)


def cosine(step: np.ndarray, total_steps: int, *, n_warmup: int, floor: float) -> np.ndarray:
    """Warmup, then a half cosine from the peak (first step after warmup) to ``floor`` (last step)."""
    progress = np.clip((step - n_warmup) / max(total_steps - n_warmup - 1, 1), 0.0, 1.0)
    return with_warmup(step, n_warmup, floor + (1.0 - floor) * 0.5 * (1.0 + np.cos(np.pi * progress)), 1.0)
