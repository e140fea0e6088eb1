"""``explore_converge``: a high constant rate, then an inverse power decay. See docs/schedules.md."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from trainables.schedules.base import with_warmup
from trainables.schedules.inverse_power import InversePowerSchedule


class ExploreConvergeSchedule(InversePowerSchedule):
    """Warmup, the peak for ``explore_frac`` of the steps, then ``inverse_power``'s decay."""

    name: Literal["explore_converge"] = "explore_converge"
    explore_frac: float = Field(0.5, gt=0, lt=1, description="explore_converge: share of steps at the high rate")

    @model_validator(mode="after")
    def _phases_fit(self) -> ExploreConvergeSchedule:
        if self.warmup_frac + self.explore_frac >= 1:
            raise ValueError(f"warmup_frac ({self.warmup_frac}) + explore_frac ({self.explore_frac}) must be below 1")
        return self

    def multipliers(self, total_steps: int, *, peak: float, batch_size: int, tokens_per_step: int) -> np.ndarray:
        return explore_converge(
            np.arange(total_steps), total_steps, n_warmup=self.warmup_steps(total_steps),
            n_explore=round(self.explore_frac * total_steps), t0=self.timescale(total_steps), beta=self.decay_exponent,
        )  # fmt: skip


def explore_converge(
    step: np.ndarray, total_steps: int, *, n_warmup: int, n_explore: int, t0: float, beta: float
) -> np.ndarray:
    """A high constant rate for ``n_explore`` steps after warmup, then (1 + t / t0)^(-beta)."""
    converge_start = n_warmup + n_explore
    after = (1.0 + np.clip(step - converge_start + 1, 0, None) / t0) ** (-beta)
    return with_warmup(step, n_warmup, np.where(step >= converge_start, after, 1.0), 1.0)
