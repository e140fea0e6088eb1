"""What every schedule family shares: its settings model's base, warmup, and settings several families read.

A family is a frozen pydantic model of the settings it reads (``name`` first)
whose ``multipliers`` give the planned rate of every step as a multiple of the
peak, so a trial's rates are known before training starts. See docs/schedules.md.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

# Settings more than one family reads, each with one default, bounds and description.
MinLrFrac = Annotated[float, Field(0.1, ge=0, le=1, description="cosine, wsd (linear, cosine): final rate / peak")]
DecayExponent = Annotated[float, Field(0.5, gt=0, le=1, description="inverse_power, explore_converge: beta")]
DecayTimescaleFrac = Annotated[
    float, Field(0.05, gt=0, le=1, description="inverse_power, explore_converge: t0 / steps")
]


class Schedule(BaseModel, ABC):
    """A schedule family's settings; step ``s`` (0-based) is the rate of the ``s+1``-th update."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str

    @abstractmethod
    def multipliers(self, total_steps: int, *, peak: float, batch_size: int, tokens_per_step: int) -> np.ndarray:
        """Planned rate of every step, as a multiple of ``peak``."""

    def momenta(self, total_steps: int) -> np.ndarray | None:
        """Planned momentum (or Adam beta1) of every step, for schedules that cycle it; else None."""
        return None


class WarmupSchedule(Schedule):
    """A family that starts with a linear warmup, which reaches its target on its last step."""

    warmup_frac: float = Field(0.05, ge=0, lt=1, description="all but one_cycle: share of steps warming up")

    def warmup_steps(self, total_steps: int) -> int:
        return round(self.warmup_frac * total_steps)


class DecaySchedule(WarmupSchedule):
    """A family that ends with a decay over its last ``decay_frac`` of steps, after warmup."""

    decay_frac: float = Field(0.2, gt=0, le=1, description="wsd, power: share of steps decaying")

    @model_validator(mode="after")
    def _phases_fit(self) -> DecaySchedule:
        if self.warmup_frac + self.decay_frac > 1:
            raise ValueError(f"warmup_frac ({self.warmup_frac}) + decay_frac ({self.decay_frac}) must not exceed 1")
        return self

    def decay_steps(self, total_steps: int) -> int:
        return max(1, round(self.decay_frac * total_steps))


def with_warmup(step: np.ndarray, n_warmup: int, after: np.ndarray, target: float | None = None) -> np.ndarray:
    """Linear warmup from 0 to ``target`` (default: the value after warmup) over ``n_warmup`` steps."""
    reach = after[min(n_warmup, len(after) - 1)] if target is None and len(after) else target
    ramp = (step + 1) / max(n_warmup, 1) * (reach if reach is not None else 1.0)
    return np.where(step < n_warmup, ramp, after)
