"""The ``fifo`` scheduler: every trial runs to its budget. See docs/spec.md."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ray.tune.schedulers import FIFOScheduler

from orchestrator.spec import SchedulerSection

if TYPE_CHECKING:
    from orchestrator.spec import SweepSpec


class FIFOSettings(SchedulerSection):
    """``scheduler: fifo``: no settings."""

    name: Literal["fifo"] = "fifo"

    def build(self, spec: SweepSpec, sweep_dir: Path) -> FIFOScheduler:
        return FIFOScheduler()
