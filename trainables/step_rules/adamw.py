"""``adamw``: AdamW at the planned rate (and planned beta1, when the schedule cycles it); fused on CUDA.

See docs/schedules.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from trainables.speed import fused_adamw
from trainables.step_rules.base import StepRule, decay_groups

if TYPE_CHECKING:
    from trainables.config import TrialConfig


class AdamWRule(StepRule):
    """AdamW following the schedule."""

    law_modelled = True

    @classmethod
    def build(cls, model: nn.Module, cfg: TrialConfig, *, steps: int, batches_per_epoch: int) -> AdamWRule:
        opt = cfg.optimizer
        device = next(model.parameters()).device
        optimizer = torch.optim.AdamW(
            decay_groups(model, cfg.weight_decay),
            lr=cfg.scaled_peak_lr,
            betas=(opt.beta1, opt.beta2),
            eps=opt.eps,
            fused=fused_adamw(device) or None,  # None: PyTorch's default kernel for the device
        )
        return cls(optimizer, model, cfg.grad_clip)
