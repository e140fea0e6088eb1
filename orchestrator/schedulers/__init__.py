"""The trial schedulers a spec can name: ``SCHEDULERS`` maps each name to its settings class, imported only when
a spec names it, which validates the ``scheduler`` section and builds the Tune scheduler. See docs/spec.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.spec.settings import SchedulerSection
from trainables.registry import Registry

if TYPE_CHECKING:
    from ray.tune.schedulers import TrialScheduler

    from orchestrator.spec import SweepSpec

__all__ = ["DEFAULT_SCHEDULER", "SCHEDULERS", "build_scheduler"]

SCHEDULERS: Registry[SchedulerSection] = Registry(
    "scheduler",
    SchedulerSection,
    {
        "fifo": "orchestrator.schedulers.fifo:FIFOSettings",
        "asha": "orchestrator.schedulers.asha:ASHASettings",
        "mpl": "orchestrator.mpl.settings:MPLSettings",
    },
)
DEFAULT_SCHEDULER = "fifo"


def build_scheduler(spec: SweepSpec, sweep_dir: Path) -> TrialScheduler:
    """The spec's scheduler; it decides on ``val_loss`` at equal ``compute``, and keeps any state in ``sweep_dir``."""
    return spec.scheduler.build(spec, sweep_dir)
