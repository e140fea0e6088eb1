"""``sgd``: SGD with momentum at the planned rate (and planned momentum, when the schedule cycles it).

See docs/schedules.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from trainables.step_rules.base import StepRule, decay_groups

if TYPE_CHECKING:
    from trainables.config import TrialConfig


class SGDRule(StepRule):
    """SGD with momentum following the schedule."""

    law_modelled = True

    @classmethod
    def build(cls, model: nn.Module, cfg: TrialConfig, *, steps: int, batches_per_epoch: int) -> SGDRule:
        optimizer = torch.optim.SGD(
            decay_groups(model, cfg.weight_decay), lr=cfg.scaled_peak_lr, momentum=cfg.optimizer.momentum
        )
        return cls(optimizer, model, cfg.grad_clip)
