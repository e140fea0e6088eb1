"""The ``asha`` scheduler: Tune's ASHA, its rungs measured in compute. See docs/spec.md."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field
from ray.tune.schedulers import ASHAScheduler

from orchestrator.spec import SchedulerSection

if TYPE_CHECKING:
    from orchestrator.spec import SweepSpec


class ASHASettings(SchedulerSection):
    """``scheduler: asha``: successive halving at shares of the budget.

    Rungs in ``compute`` rather than reports or steps compare trials of different batch sizes (or patch
    settings) after the same amount of work.
    """

    name: Literal["asha"] = "asha"
    grace_fraction: float = Field(0.25, gt=0, lt=1, description="share of the budget before the first cut")
    reduction_factor: float = Field(3.0, gt=1)

    def build(self, spec: SweepSpec, sweep_dir: Path) -> ASHAScheduler:
        budget = spec.budget.compute
        return ASHAScheduler(
            time_attr="compute",
            max_t=budget,
            grace_period=self.grace_fraction * budget,
            reduction_factor=self.reduction_factor,
        )
