"""What every step rule shares: one step on one batch, the rate it used and the compute it spent.

A rule's traits (class attributes) tell the rest of effsweep how to treat it:
whether it chooses its own rate, whether the Multi-Power Law models it, the
least extra compute a step costs, and whether it must train on one worker.
See docs/schedules.md.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

if TYPE_CHECKING:
    from trainables.config import TrialConfig

FORWARD_COST = 1.0 / 3.0  # a forward pass is about a third of a forward and backward


class TrainingBatch:
    """A worker's rows of one global batch, as a step rule trains on them.

    Called, it gives the loss of all the rows at the current weights with its graph (the closure of a rule
    that evaluates the loss at several weights). ``backward`` accumulates the gradient of that loss over
    micro-batches of at most ``micro_batch_size`` rows, each weighted by its share of the rows, so the
    gradient is the whole batch's whatever the micro-batch; ``no_sync`` (a data-parallel wrapper's) keeps
    the workers from averaging gradients before the last micro-batch.

    Example:
        >>> w = torch.nn.Parameter(torch.ones(1))
        >>> batch = TrainingBatch(lambda rows: (w * rows).mean(), torch.arange(4.0), micro_batch_size=1)
        >>> batch.backward().item(), w.grad.item()
        (1.5, 1.5)
    """

    def __init__(
        self,
        loss: Callable[[torch.Tensor], torch.Tensor],
        rows: torch.Tensor,
        micro_batch_size: int | None = None,
        no_sync: Callable[[], AbstractContextManager] = contextlib.nullcontext,
    ) -> None:
        if micro_batch_size is not None and micro_batch_size < 1:
            raise ValueError(f"micro_batch_size must be at least 1, got {micro_batch_size}")
        self._loss = loss
        self._rows = rows
        self._micro = micro_batch_size or len(rows)
        self._no_sync = no_sync

    def __call__(self) -> torch.Tensor:
        return self._loss(self._rows)

    def backward(self) -> torch.Tensor:
        """Accumulate the batch loss's gradient into the parameters' ``grad``; returns the loss, detached."""
        if self._micro >= len(self._rows):
            loss = self._loss(self._rows)
            loss.backward()
            return loss.detach()
        chunks = self._rows.split(self._micro)
        total = torch.zeros((), device=self._rows.device)
        for index, chunk in enumerate(chunks):
            last = index == len(chunks) - 1
            with contextlib.nullcontext() if last else self._no_sync():
                loss = self._loss(chunk) * (len(chunk) / len(self._rows))
                loss.backward()
            total += loss.detach()
        return total


class StepRule(ABC):
    """An optimizer and what a step of it takes; by default a step at the planned rate (and momentum)."""

    # The rule sets its rate from the loss as it goes: the trial has no planned rates.
    chooses_own_rate: ClassVar[bool] = False
    # The rule steps at the planned schedule's rate, so the Multi-Power Law models its loss; other
    # rules set or shape their own rate and take the constant schedule.
    law_modelled: ClassVar[bool] = False
    # The least compute a step costs beyond one forward and backward, in training steps.
    extra_compute_per_step: ClassVar[float] = 0.0
    # Its step depends on the batch's rows, so data-parallel workers would each step differently.
    single_worker_only: ClassVar[bool] = False
    # It trains under bf16 autocast: it does not compare losses or gradients finer than bf16 resolves.
    mixed_precision: ClassVar[bool] = True
    # Its gradient may be accumulated over micro-batches: it needs no loss of the whole batch at once.
    accumulates: ClassVar[bool] = True

    def __init__(self, optimizer: torch.optim.Optimizer, model: nn.Module, grad_clip: float) -> None:
        self.optimizer = optimizer
        self.model = model
        self.grad_clip = grad_clip

    @classmethod
    @abstractmethod
    def build(cls, model: nn.Module, cfg: TrialConfig, *, steps: int, batches_per_epoch: int) -> StepRule:
        """The rule with a fresh optimizer for a phase of ``steps`` planned steps."""

    @property
    def min_cost(self) -> float:
        """The least compute a step can take, in training steps."""
        return 1.0 + self.extra_compute_per_step

    def step(self, batch: TrainingBatch, lr: float, momentum: float | None = None) -> tuple[torch.Tensor, float, float]:
        """One step; the loss at the weights before it, the rate used and the compute spent, in training steps.

        The loss stays a detached tensor on the training device: the caller reduces it over the workers
        before reading it.
        """
        for group in self.optimizer.param_groups:
            group["lr"] = lr
            if momentum is not None:
                if "betas" in group:
                    group["betas"] = (momentum, group["betas"][1])
                else:
                    group["momentum"] = momentum
        loss = self._backward(batch)
        self.optimizer.step()
        return loss, lr, 1.0

    def _backward(self, batch: TrainingBatch) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        loss = batch.backward()
        if self.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        return loss

    # Optional hooks, no-ops for a rule that keeps one set of weights (schedule-free keeps two).
    def train(self) -> None:  # noqa: B027
        """Put the weights where gradients are taken (before training steps)."""

    def eval(self) -> None:  # noqa: B027
        """Put the weights where the model is judged (before evaluation and checkpoints)."""

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of the rule, taken in train mode."""
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])


def trained_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Parameter groups with weight decay on matrices only, as in GPT-2 and nanoGPT."""
    params = trained_parameters(model)
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
