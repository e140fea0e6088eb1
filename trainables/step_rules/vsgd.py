"""``vsgd``: per-parameter rates from running gradient and curvature estimates; two gradients a step.

Schaul, Zhang and LeCun 2012, arXiv 1206.1106, with the finite-difference curvature of Schaul and
LeCun 2013, arXiv 1301.3764. See docs/schedules.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.optim import Optimizer

from trainables.step_rules.base import StepRule, TrainingBatch, trained_parameters

if TYPE_CHECKING:
    from trainables.config import TrialConfig


class VSGD(Optimizer):
    """vSGD with finite-difference curvature, which needs no second-order backpropagation.

    For every parameter i, with memory tau_i:

        g_bar <- (1 - 1/tau) g_bar + g / tau,     v_bar <- (1 - 1/tau) v_bar + g^2 / tau
        h_bar <- (1 - 1/tau) h_bar + h / tau,     vh_bar <- (1 - 1/tau) vh_bar + h^2 / tau
        eta   = (g_bar^2 / v_bar) * (h_bar / vh_bar)
        tau  <- (1 - g_bar^2 / v_bar) tau + 1
        w    <- w - eta g

    where h = |g(w + d) - g(w)| / |d| is a finite difference of the gradient on
    the same minibatch along d = g_bar (the first step: d = g); h_bar / vh_bar is
    the 2013 paper's conservative stand-in for 1 / h_bar. Each minibatch's
    gradient counts as one sample. A sample more than ``outlier_sigmas``
    standard deviations from its running mean (in g or in h) lengthens that
    parameter's memory by one first, so it weighs less. Slow start: the first
    sample sets the averages, with v_bar and vh_bar inflated by ``slow_start``
    and tau = 2, so the first steps are small. Each step costs two gradients.

    ``step(closure)`` needs a closure that computes the minibatch loss at the
    current weights (no backward); it is evaluated twice, at w and at w + d.
    ``last_rate`` is the mean per-parameter rate of the last step.

    Example:
        >>> w = torch.nn.Parameter(torch.tensor([3.0, -2.0]))
        >>> opt = VSGD([w])
        >>> for _ in range(200):
        ...     _ = opt.step(lambda: (w * torch.tensor([1.0, 4.0])).pow(2).sum())
        >>> bool(w.abs().max() < 1e-2)
        True
    """

    def __init__(
        self, params: Iterable[torch.Tensor], *, slow_start: float = 2.0, outlier_sigmas: float = 2.0, eps: float = 1e-9
    ) -> None:
        if slow_start < 1 or outlier_sigmas <= 0 or eps <= 0:
            raise ValueError(
                f"need slow_start >= 1, outlier_sigmas > 0, eps > 0; got {slow_start}, {outlier_sigmas}, {eps}"
            )
        super().__init__(params, {"slow_start": slow_start, "outlier_sigmas": outlier_sigmas, "eps": eps})
        self.last_rate = 0.0

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        owned = [(p, group) for group in self.param_groups for p in group["params"]]
        loss = self._gradients(closure)
        grads = [p.grad.clone() for p, _ in owned]
        directions = [self.state[p]["g_bar"] if self.state[p] else g for (p, _), g in zip(owned, grads, strict=True)]
        for (p, _), d in zip(owned, directions, strict=True):
            p.add_(d)
        self._gradients(closure)
        total_rate, count = 0.0, 0
        for (p, group), g, d in zip(owned, grads, directions, strict=True):
            p.sub_(d)
            h = (g - p.grad).abs() / (d.abs() + group["eps"])
            eta = self._update_statistics(self.state[p], g, h, group)
            p.sub_(eta * g)
            total_rate += float(eta.sum())
            count += eta.numel()
        self.last_rate = total_rate / max(count, 1)
        return loss

    def _gradients(self, closure: Callable[[], torch.Tensor]) -> torch.Tensor:
        self.zero_grad(set_to_none=False)
        with torch.enable_grad():
            loss = closure()
            loss.backward()
        return loss

    @staticmethod
    def _update_statistics(state: dict, g: torch.Tensor, h: torch.Tensor, group: dict) -> torch.Tensor:
        """Fold one sample into the running estimates and return this step's per-parameter rates."""
        eps = group["eps"]
        if not state:
            state["g_bar"] = g.clone()
            state["v_bar"] = group["slow_start"] * g.pow(2) + eps
            state["h_bar"] = h.clone()
            state["vh_bar"] = group["slow_start"] * h.pow(2) + eps
            state["tau"] = torch.full_like(g, 2.0)
        else:
            g_bar, v_bar, h_bar, vh_bar, tau = (state[k] for k in ("g_bar", "v_bar", "h_bar", "vh_bar", "tau"))
            sigmas = group["outlier_sigmas"] ** 2
            outlier = ((g - g_bar).pow(2) > sigmas * (v_bar - g_bar.pow(2))) | (
                (h - h_bar).pow(2) > sigmas * (vh_bar - h_bar.pow(2))
            )
            tau.add_(outlier.to(tau.dtype))
            weight = 1.0 / tau
            for average, sample in ((g_bar, g), (v_bar, g.pow(2)), (h_bar, h), (vh_bar, h.pow(2))):
                average.mul_(1 - weight).add_(weight * sample)
        ratio = state["g_bar"].pow(2) / (state["v_bar"] + eps)
        eta = ratio * state["h_bar"] / (state["vh_bar"] + eps)
        state["tau"].mul_(1 - ratio).add_(1.0)
        return eta


class VSGDRule(StepRule):
    """``VSGD`` on all trained weights, without weight decay or clipping: its rates come from the gradients alone."""

    chooses_own_rate = True
    single_worker_only = True
    mixed_precision = False  # its curvature is a difference of gradients at nearby weights, lost in bf16
    accumulates = False  # it takes the whole batch's gradient at two weights per step
    extra_compute_per_step = 1.0  # the second gradient, at w + d

    @classmethod
    def build(cls, model: nn.Module, cfg: TrialConfig, *, steps: int, batches_per_epoch: int) -> VSGDRule:
        return cls(VSGD(trained_parameters(model)), model, 0.0)

    def step(self, batch: TrainingBatch, lr: float, momentum: float | None = None) -> tuple[torch.Tensor, float, float]:
        loss = self.optimizer.step(batch)
        return loss.detach(), self.optimizer.last_rate, self.min_cost
