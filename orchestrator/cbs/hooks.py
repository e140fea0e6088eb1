"""What a sweep racing to a target loss over batch sizes gets: the outpaced stopper. See ``docs/cbs.md``.

Such a sweep (``target_loss`` fixed, ``batch_size`` searched, as each round of ``effsweep cbs``) stops a trial
once a smaller batch size has reached the target in fewer steps (``orchestrator.cbs.outpaced``).
"""

from __future__ import annotations

from ray.tune import Stopper

from orchestrator.cbs.outpaced import OutpacedStopper
from orchestrator.spec import SweepSpec
from orchestrator.sweep_hooks import SweepHooks


class OutpacedHooks(SweepHooks):
    """On for sweeps whose trials race to a target loss over several batch sizes."""

    @classmethod
    def for_spec(cls, spec: SweepSpec) -> OutpacedHooks | None:
        return cls() if races_to_target(spec) else None

    def stoppers(self) -> list[Stopper]:
        return [OutpacedStopper()]


def races_to_target(spec: SweepSpec) -> bool:
    """Whether trials run to a target loss over several batch sizes (as ``effsweep cbs`` rounds do)."""
    return spec.fixed_config().get("target_loss") is not None and any(k.name == "batch_size" for k in spec.knobs)
