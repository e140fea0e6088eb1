"""The trial schedulers a spec can name; they decide on ``val_loss`` at equal ``compute``."""

from __future__ import annotations

from pathlib import Path

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from orchestrator.mpl.fit import read_fit
from orchestrator.mpl.pruner import MPLPruner
from orchestrator.spec import SweepSpec


def build_scheduler(spec: SweepSpec, sweep_dir: Path) -> TrialScheduler:
    """``fifo`` runs every trial to its budget; ``asha`` stops the worst at rungs of compute;
    ``mpl`` stops those the Multi-Power Law predicts will not win (``orchestrator.mpl.pruner``).

    ASHA's rungs are measured in ``compute`` rather than reports or steps, so
    trials with different batch sizes (or patch settings) are compared after
    the same amount of work.
    """
    scheduler = spec.scheduler
    if scheduler.name == "fifo":
        return FIFOScheduler()
    if scheduler.name == "mpl":
        return MPLPruner(
            sweep_dir, fractions=tuple(scheduler.fractions), margin=scheduler.margin, z=scheduler.z,
            min_completed=scheduler.min_completed,
            prior=read_fit(Path(scheduler.prior)) if scheduler.prior else None,
        )  # fmt: skip
    budget = spec.budget.compute
    return ASHAScheduler(
        time_attr="compute",
        max_t=budget,
        grace_period=spec.scheduler.grace_fraction * budget,
        reduction_factor=spec.scheduler.reduction_factor,
    )
