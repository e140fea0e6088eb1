"""Step rules: one training step on one batch, and the learning rate it actually used.

A rule wraps an optimizer and knows what a step of it takes:

- ``adamw``, ``sgd``: one forward and backward, then a step at the planned
  rate (and planned momentum, when the schedule cycles it);
- ``schedule_free_adamw``, ``schedule_free_sgd`` (Defazio et al. 2024, arXiv
  2405.15682, the official ``schedulefree`` package): constant rate with
  warmup, gradients taken at the interpolated point y; ``eval()`` moves the
  weights to the averaged point x for every evaluation, ``train()`` back;
- ``armijo_sgd``: a line search on the batch (``trainables.step_rules.armijo``); each
  trial step costs a forward pass, a third of a training step;
- ``vsgd``: per-parameter rates (``trainables.step_rules.vsgd``); two gradients a step.

``step`` returns the loss at the weights before the step, the rate used
(the mean per-parameter rate for vSGD) and the compute spent, in training
steps' worth (1.0 for one forward and backward).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import schedulefree
import torch
from torch import nn

from trainables.config import TrialConfig
from trainables.step_rules.armijo import ArmijoSGD
from trainables.step_rules.vsgd import VSGD

LossFn = Callable[[], torch.Tensor]
FORWARD_COST = 1.0 / 3.0  # a forward pass is about a third of a forward and backward


class StepRule:
    """An optimizer that follows the planned rate; the base of the other rules."""

    min_cost = 1.0  # the least compute a step can take, in training steps

    def __init__(self, optimizer: torch.optim.Optimizer, model: nn.Module, grad_clip: float) -> None:
        self.optimizer = optimizer
        self.model = model
        self.grad_clip = grad_clip

    def step(self, loss_fn: LossFn, lr: float, momentum: float | None = None) -> tuple[float, float, float]:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
            if momentum is not None:
                if "betas" in group:
                    group["betas"] = (momentum, group["betas"][1])
                else:
                    group["momentum"] = momentum
        loss = self._backward(loss_fn)
        self.optimizer.step()
        return loss, lr, 1.0

    def _backward(self, loss_fn: LossFn) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        if self.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        return loss.item()

    def train(self) -> None:
        """Put the weights where gradients are taken (before training steps)."""

    def eval(self) -> None:
        """Put the weights where the model is judged (before evaluation and checkpoints)."""

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of the rule, taken in train mode."""
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])


class ScheduleFreeRule(StepRule):
    def step(self, loss_fn: LossFn, lr: float, momentum: float | None = None) -> tuple[float, float, float]:
        loss = self._backward(loss_fn)
        self.optimizer.step()
        return loss, self.optimizer.param_groups[0]["scheduled_lr"], 1.0

    def train(self) -> None:
        self.optimizer.train()

    def eval(self) -> None:
        self.optimizer.eval()


class ArmijoRule(StepRule):
    min_cost = 1.0 + FORWARD_COST

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "step_size": self.optimizer.step_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.optimizer.step_size = state["step_size"]

    def step(self, loss_fn: LossFn, lr: float, momentum: float | None = None) -> tuple[float, float, float]:
        self.optimizer.step(loss_fn)
        found = self.optimizer.last
        return found.loss, found.step_size, 1.0 + FORWARD_COST * (found.evaluations - 1)


class VSGDRule(StepRule):
    min_cost = 2.0

    def step(self, loss_fn: LossFn, lr: float, momentum: float | None = None) -> tuple[float, float, float]:
        loss = self.optimizer.step(loss_fn)
        return loss.item(), self.optimizer.last_rate, 2.0


def build_step_rule(model: nn.Module, cfg: TrialConfig, *, steps: int, batches_per_epoch: int) -> StepRule:
    """The trial's step rule, fresh (new optimizer state) for a phase of ``steps`` planned steps.

    Weight decay applies to matrices only, as in GPT-2 and nanoGPT; the line
    search and vSGD take no weight decay (their rates come from the loss alone).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    opt = cfg.optimizer
    if opt.name == "adamw":
        optimizer = torch.optim.AdamW(groups, lr=cfg.scaled_peak_lr, betas=(opt.beta1, opt.beta2), eps=opt.eps)
        return StepRule(optimizer, model, cfg.grad_clip)
    if opt.name == "sgd":
        return StepRule(torch.optim.SGD(groups, lr=cfg.scaled_peak_lr, momentum=opt.momentum), model, cfg.grad_clip)
    if opt.name.startswith("schedule_free"):
        warmup = round(cfg.schedule.warmup_frac * steps)
        if opt.name == "schedule_free_adamw":
            optimizer = schedulefree.AdamWScheduleFree(
                groups, lr=cfg.scaled_peak_lr, betas=(opt.beta1, opt.beta2), eps=opt.eps, warmup_steps=warmup
            )
        else:
            optimizer = schedulefree.SGDScheduleFree(
                groups, lr=cfg.scaled_peak_lr, momentum=opt.momentum, warmup_steps=warmup
            )
        rule = ScheduleFreeRule(optimizer, model, cfg.grad_clip)
        rule.train()  # schedule-free optimizers refuse to step until put in train mode
        return rule
    if opt.name == "armijo_sgd":
        optimizer = ArmijoSGD(params, lr=opt.line_search_start, batches_per_epoch=batches_per_epoch)
        return ArmijoRule(optimizer, model, 0.0)
    return VSGDRule(VSGD(params), model, 0.0)
