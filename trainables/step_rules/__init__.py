"""Step rules: one training step on one batch, and the learning rate it actually used.

``STEP_RULES`` maps a rule's name (``optimizer.name``) to its class or its
``"module:Class"`` path, imported the first time a trial uses it; a rule's
traits (``StepRule``'s class attributes) say how the rest of effsweep treats
it. A new rule is one module and one ``register_step_rule`` call. See docs/schedules.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from trainables.registry import Registry
from trainables.step_rules.base import StepRule, TrainingBatch

if TYPE_CHECKING:
    from trainables.config import TrialConfig

__all__ = ["STEP_RULES", "StepRule", "TrainingBatch", "build_step_rule", "register_step_rule", "step_rule_class"]

STEP_RULES: Registry[StepRule] = Registry(
    "step rule",
    StepRule,
    {
        "adamw": "trainables.step_rules.adamw:AdamWRule",
        "sgd": "trainables.step_rules.sgd:SGDRule",
        "schedule_free_adamw": "trainables.step_rules.schedule_free:ScheduleFreeAdamWRule",
        "schedule_free_sgd": "trainables.step_rules.schedule_free:ScheduleFreeSGDRule",
        "armijo_sgd": "trainables.step_rules.armijo:ArmijoRule",
        "vsgd": "trainables.step_rules.vsgd:VSGDRule",
        "dbd": "trainables.step_rules.delta_bar_delta:DeltaBarDeltaRule",
        "dbd_retract": "trainables.step_rules.delta_bar_delta:DeltaBarDeltaRetractRule",
        "autolrs": "trainables.step_rules.autolrs:AutoLRSRule",
    },
)


def register_step_rule(name: str, implementation: str | type[StepRule]) -> None:
    """Add the rule ``name``: a ``StepRule`` subclass, or its ``"module:Class"`` path (imported on first use).

    Trials in other processes see it when the registering module is named in ``EFFSWEEP_PLUGINS``
    (``trainables.registry``).
    """
    STEP_RULES.register(name, implementation)


def step_rule_class(name: str) -> type[StepRule]:
    """The rule registered as ``name``, whose traits are class attributes; an unknown name lists the known ones."""
    return STEP_RULES.load(name)


def build_step_rule(model: nn.Module, cfg: TrialConfig, *, steps: int, batches_per_epoch: int) -> StepRule:
    """The trial's step rule, fresh (new optimizer state) for a phase of ``steps`` planned steps."""
    return step_rule_class(cfg.optimizer.name).build(model, cfg, steps=steps, batches_per_epoch=batches_per_epoch)
