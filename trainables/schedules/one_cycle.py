"""``one_cycle``: up from peak/div, down to peak/(div * final_div), with cyclic momentum.

Smith and Topin 2017, arXiv 1708.07120; PyTorch's OneCycleLR with cosine annealing. See docs/schedules.md.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from trainables.schedules.base import Schedule


class OneCycleSchedule(Schedule):
    """One cycle of the rate, and of the momentum against it; no separate warmup."""

    name: Literal["one_cycle"] = "one_cycle"
    cycle_rise_frac: float = Field(0.3, gt=0, lt=1, description="one_cycle: share of steps rising")
    cycle_div: float = Field(25.0, ge=1, description="one_cycle: peak / starting rate")
    cycle_final_div: float = Field(1e4, ge=1, description="one_cycle: starting rate / final rate")
    momentum_low: float = Field(0.85, ge=0, lt=1, description="one_cycle: momentum (or beta1) at the peak rate")
    momentum_high: float = Field(0.95, ge=0, lt=1, description="one_cycle: momentum (or beta1) at both ends")

    @model_validator(mode="after")
    def _momenta_ordered(self) -> OneCycleSchedule:
        if self.momentum_low > self.momentum_high:
            raise ValueError(f"momentum_low ({self.momentum_low}) must not exceed momentum_high ({self.momentum_high})")
        return self

    def multipliers(self, total_steps: int, *, peak: float, batch_size: int, tokens_per_step: int) -> np.ndarray:
        return one_cycle(
            np.arange(total_steps), total_steps, rise_frac=self.cycle_rise_frac, div=self.cycle_div,
            final_div=self.cycle_final_div,
        )  # fmt: skip

    def momenta(self, total_steps: int) -> np.ndarray:
        return one_cycle_momentum(
            np.arange(total_steps), total_steps, rise_frac=self.cycle_rise_frac,
            low=self.momentum_low, high=self.momentum_high,
        )  # fmt: skip


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
