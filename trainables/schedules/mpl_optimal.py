"""``mpl_optimal``: the rates that minimise a fitted Multi-Power Law's final loss.

The law and its optimiser are ``trainables.laws.multipower``; a spec names a fit
file and the orchestrator fills in ``mpl_law``. See docs/schedules.md.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from trainables.laws.multipower import MPLParams, mpl_optimal_rates
from trainables.schedules.base import WarmupSchedule


class MPLLawConfig(BaseModel):
    """The Multi-Power Law's parameters for ``mpl_optimal``; a spec names a fit file, the orchestrator fills them in."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    L0: float | None = None
    A: float | None = Field(None, ge=0)
    alpha: float | None = Field(None, gt=0)
    B: float | None = Field(None, ge=0)
    C: float | None = Field(None, gt=0)
    beta: float | None = Field(None, gt=0)
    gamma: float | None = Field(None, gt=0)

    def params(self) -> MPLParams | None:
        values = self.model_dump()
        return None if any(v is None for v in values.values()) else MPLParams(**values)


class MPLOptimalSchedule(WarmupSchedule):
    """Warmup, then the non-increasing rates the law predicts to end lowest."""

    name: Literal["mpl_optimal"] = "mpl_optimal"
    mpl_law: MPLLawConfig = MPLLawConfig()

    @model_validator(mode="after")
    def _law_given(self) -> MPLOptimalSchedule:
        if self.mpl_law.params() is None:
            missing = [k for k, v in self.mpl_law.model_dump().items() if v is None]
            raise ValueError(
                f"mpl_optimal needs the fitted law: set schedule.mpl_fit to a fit file in the spec "
                f"(missing schedule.mpl_law.{', '.join(missing)})"
            )
        return self

    def multipliers(self, total_steps: int, *, peak: float, batch_size: int, tokens_per_step: int) -> np.ndarray:
        law = self.mpl_law.params()
        return mpl_optimal_rates(law, total_steps, self.warmup_steps(total_steps), peak) / peak
