"""``armijo_sgd``: SGD with an Armijo line search on each minibatch (Vaswani et al. 2019, arXiv 1905.09997).

Each trial step size costs a forward pass, a third of a training step. See docs/schedules.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.optim import Optimizer

from trainables.step_rules.base import FORWARD_COST, StepRule, TrainingBatch, trained_parameters

if TYPE_CHECKING:
    from trainables.config import TrialConfig


@dataclass(frozen=True)
class LineSearchStep:
    """What one step found: the losses compared, the accepted step size and the losses computed."""

    loss: float
    trial_loss: float
    step_size: float
    grad_norm_sq: float
    evaluations: int

    def satisfies_armijo(self, c: float) -> bool:
        return self.trial_loss <= self.loss - c * self.step_size * self.grad_norm_sq


class ArmijoSGD(Optimizer):
    """Stochastic line-search SGD.

    Each step starts from the previous step size, grown by ``growth`` ** (1 /
    ``batches_per_epoch``) (so at most by ``growth`` over an epoch), and
    backtracks on the same minibatch until f(w - eta g) <= f(w) - c * eta * |g|^2,
    multiplying eta by ``backtrack`` after each failure (defaults as in the
    authors' ``sls`` code). If no step size passes within ``max_tries``, it
    takes a step of ``fallback`` and carries on from there.

    ``step(closure)`` needs a closure that computes the minibatch loss at the
    current weights (no backward); it runs the backward itself and evaluates
    the closure again at each trial step.

    Example:
        >>> w = torch.nn.Parameter(torch.tensor([3.0]))
        >>> opt = ArmijoSGD([w], lr=1.0)
        >>> for _ in range(20):
        ...     _ = opt.step(lambda: (w - 1.0).pow(2).sum())
        >>> abs(w.item() - 1.0) < 1e-2, opt.last.satisfies_armijo(0.1)
        (True, True)
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float = 1.0,
        *,
        c: float = 0.1,
        backtrack: float = 0.9,
        growth: float = 2.0,
        batches_per_epoch: int = 1,
        max_tries: int = 100,
        fallback: float = 1e-6,
    ) -> None:
        if lr <= 0 or not 0 < c < 1 or not 0 < backtrack < 1 or growth < 1 or batches_per_epoch < 1:
            raise ValueError(
                f"need lr > 0, 0 < c < 1, 0 < backtrack < 1, growth >= 1, batches_per_epoch >= 1; got {lr}, {c}, "
                f"{backtrack}, {growth}, {batches_per_epoch}"
            )
        super().__init__(params, {"lr": lr})
        self.c, self.backtrack, self.max_tries, self.fallback = c, backtrack, max_tries, fallback
        self.reset_factor = growth ** (1.0 / batches_per_epoch)
        self.step_size = lr / self.reset_factor  # the first step starts at lr
        self.last: LineSearchStep | None = None

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        params = [p for group in self.param_groups for p in group["params"]]
        self.zero_grad(set_to_none=True)
        with torch.enable_grad():
            loss = closure()
            loss.backward()
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        grad_norm_sq = float(sum(g.pow(2).sum() for g in grads))
        start = [p.detach().clone() for p in params]
        eta = self.step_size * self.reset_factor
        loss0, trial, evaluations = float(loss), float(loss), 1
        if grad_norm_sq > 1e-16:
            for _ in range(self.max_tries):
                _move(params, start, grads, eta)
                trial = float(closure())
                evaluations += 1
                if trial <= loss0 - self.c * eta * grad_norm_sq:
                    break
                eta *= self.backtrack
            else:
                eta = self.fallback
                _move(params, start, grads, eta)
                trial = float(closure())
                evaluations += 1
        self.step_size = eta
        for group in self.param_groups:
            group["lr"] = eta
        self.last = LineSearchStep(loss0, trial, eta, grad_norm_sq, evaluations)
        return loss


def _move(params: list[torch.Tensor], start: list[torch.Tensor], grads: list[torch.Tensor], eta: float) -> None:
    for p, p0, g in zip(params, start, grads, strict=True):
        p.copy_(p0).add_(g, alpha=-eta)


class ArmijoRule(StepRule):
    """``ArmijoSGD`` on all trained weights, without weight decay or clipping: its rate comes from the loss alone."""

    chooses_own_rate = True
    single_worker_only = True
    mixed_precision = False  # its sufficient-decrease test compares losses closer than bf16 resolves
    accumulates = False  # the line search evaluates the whole batch's loss at each trial step
    extra_compute_per_step = FORWARD_COST  # at least one trial step's forward pass

    @classmethod
    def build(cls, model: nn.Module, cfg: TrialConfig, *, steps: int, batches_per_epoch: int) -> ArmijoRule:
        optimizer = ArmijoSGD(
            trained_parameters(model), lr=cfg.optimizer.line_search_start, batches_per_epoch=batches_per_epoch
        )
        return cls(optimizer, model, 0.0)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "step_size": self.optimizer.step_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.optimizer.step_size = state["step_size"]

    def step(self, batch: TrainingBatch, lr: float, momentum: float | None = None) -> tuple[torch.Tensor, float, float]:
        loss = self.optimizer.step(batch)
        found = self.optimizer.last
        return loss.detach(), found.step_size, 1.0 + FORWARD_COST * (found.evaluations - 1)
