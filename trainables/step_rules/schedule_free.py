"""``schedule_free_adamw``, ``schedule_free_sgd``: constant rate with warmup, no decay to plan.

Defazio et al. 2024, arXiv 2405.15682, with the official ``schedulefree`` package: gradients are taken
at the interpolated point y, and ``eval()`` moves the weights to the averaged point x for every
evaluation, ``train()`` back. See docs/schedules.md.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING, Any

import schedulefree
import torch
from torch import nn

from trainables.step_rules.base import StepRule, TrainingBatch, decay_groups

if TYPE_CHECKING:
    from trainables.config import TrialConfig


class ScheduleFreeRule(StepRule):
    """A schedule-free optimizer; it shapes its own rate (warmup, then the peak) and reports it."""

    @classmethod
    def build(cls, model: nn.Module, cfg: TrialConfig, *, steps: int, batches_per_epoch: int) -> ScheduleFreeRule:
        groups = decay_groups(model, cfg.weight_decay)
        rule = cls(cls._optimizer(groups, cfg, warmup_steps=cfg.schedule.warmup_steps(steps)), model, cfg.grad_clip)
        rule.train()  # schedule-free optimizers refuse to step until put in train mode
        return rule

    @staticmethod
    @abstractmethod
    def _optimizer(groups: list[dict[str, Any]], cfg: TrialConfig, *, warmup_steps: int) -> torch.optim.Optimizer:
        """The schedule-free optimizer over ``groups``."""

    def step(self, batch: TrainingBatch, lr: float, momentum: float | None = None) -> tuple[torch.Tensor, float, float]:
        loss = self._backward(batch)
        self.optimizer.step()
        return loss, self.optimizer.param_groups[0]["scheduled_lr"], 1.0

    def train(self) -> None:
        self.optimizer.train()

    def eval(self) -> None:
        self.optimizer.eval()


class ScheduleFreeAdamWRule(ScheduleFreeRule):
    @staticmethod
    def _optimizer(groups: list[dict[str, Any]], cfg: TrialConfig, *, warmup_steps: int) -> torch.optim.Optimizer:
        opt = cfg.optimizer
        return schedulefree.AdamWScheduleFree(
            groups, lr=cfg.scaled_peak_lr, betas=(opt.beta1, opt.beta2), eps=opt.eps, warmup_steps=warmup_steps
        )


class ScheduleFreeSGDRule(ScheduleFreeRule):
    @staticmethod
    def _optimizer(groups: list[dict[str, Any]], cfg: TrialConfig, *, warmup_steps: int) -> torch.optim.Optimizer:
        return schedulefree.SGDScheduleFree(
            groups, lr=cfg.scaled_peak_lr, momentum=cfg.optimizer.momentum, warmup_steps=warmup_steps
        )
