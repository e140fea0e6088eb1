"""``dbd`` and ``dbd_retract``: one rate per parameter, grown while its gradient keeps its sign, cut when it flips.

Delta-bar-delta (Jacobs 1988, as in mlpack's ensmallen) around Adam's or
momentum SGD's direction; ``dbd_retract`` adds effsweep's own retraction of
rate increases that the next minibatch contradicts. See docs/schedules.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn
from torch.optim import Optimizer

from trainables.step_rules.base import StepRule, TrainingBatch, decay_groups

if TYPE_CHECKING:
    from trainables.config import TrialConfig

Direction = Literal["adam", "momentum"]


class DeltaBarDelta(Optimizer):
    """Per-parameter gains on the rate ``lr``, adapted by delta-bar-delta, applied to Adam's or momentum's direction.

    For every parameter i, with g its gradient and g_bar the average of its past gradients:

        gain  <- gain + kappa             if g * g_bar > 0   (additive increase)
        gain  <- gain * (1 - phi)         if g * g_bar < 0   (multiplicative decrease)
        gain  <- clamp(gain, min_gain, max_gain)
        g_bar <- theta * g_bar + (1 - theta) * g
        w     <- w - lr * gain * d        (d: Adam's bias-corrected m / (sqrt(v) + eps), or SGD momentum's buffer)

    With ``retract``, an increase is provisional for one step: if the next
    gradient's sign contradicts that of the gradient that earned it (the
    enlarged step overshot, or the agreement was minibatch noise), the
    increase is withdrawn before the new adjustment. Decreases stand.
    ``last_rate`` is the mean of lr * gain over all parameters after a step.

    Example:
        >>> w = torch.nn.Parameter(torch.tensor([3.0, -2.0]))
        >>> opt = DeltaBarDelta([w], lr=0.1, direction="momentum", momentum=0.0)
        >>> for _ in range(100):
        ...     opt.zero_grad()
        ...     (w * torch.tensor([1.0, 4.0])).pow(2).sum().backward()
        ...     opt.step()
        >>> bool(w.abs().max() < 1e-3)
        True
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float,
        *,
        direction: Direction = "adam",
        kappa: float = 0.05,
        phi: float = 0.1,
        theta: float = 0.7,
        min_gain: float = 0.01,
        max_gain: float = 5.0,
        momentum: float = 0.9,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        retract: bool = False,
    ) -> None:
        if direction not in ("adam", "momentum"):
            raise ValueError(f"direction must be adam or momentum, got {direction!r}")
        if lr <= 0 or kappa < 0 or not 0 <= phi < 1 or not 0 <= theta < 1 or not 0 < min_gain <= 1 <= max_gain:
            raise ValueError(
                "need lr > 0, kappa >= 0, 0 <= phi < 1, 0 <= theta < 1, 0 < min_gain <= 1 <= max_gain; got "
                f"{lr}, {kappa}, {phi}, {theta}, {min_gain}, {max_gain}"
            )
        defaults = {
            "lr": lr, "direction": direction, "kappa": kappa, "phi": phi, "theta": theta, "min_gain": min_gain,
            "max_gain": max_gain, "momentum": momentum, "betas": betas, "eps": eps, "weight_decay": weight_decay,
            "retract": retract,
        }  # fmt: skip
        super().__init__(params, defaults)
        self.last_rate = lr

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        rate_sum = torch.zeros(())
        count = 0
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                gain = self._adapt(self.state[p], p.grad, group)
                if group["weight_decay"]:
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                p.addcmul_(gain, self._direction(self.state[p], p.grad, group), value=-group["lr"])
                rate_sum = rate_sum.to(gain.device) + gain.sum() * group["lr"]
                count += gain.numel()
        self.last_rate = float(rate_sum) / max(count, 1)
        return loss

    @staticmethod
    def _adapt(state: dict[str, Any], g: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
        """The parameter's gains after this gradient; g_bar (and the retraction's memory) updated."""
        if not state:
            state["gain"] = torch.ones_like(g)
            state["g_bar"] = torch.zeros_like(g)
            if group["retract"]:
                state["raised"] = torch.zeros_like(g, dtype=torch.bool)  # increases still provisional
                state["earned_by"] = torch.zeros_like(g)  # the gradient that earned each of them
        gain, g_bar = state["gain"], state["g_bar"]
        if group["retract"]:
            contradicted = state["raised"] & (g * state["earned_by"] < 0)
            gain.sub_(group["kappa"] * contradicted.to(gain.dtype))
        agreement = g * g_bar
        raised = agreement > 0
        gain.add_(group["kappa"] * raised.to(gain.dtype))
        gain.mul_(1 - group["phi"] * (agreement < 0).to(gain.dtype))
        gain.clamp_(group["min_gain"], group["max_gain"])
        g_bar.mul_(group["theta"]).add_(g, alpha=1 - group["theta"])
        if group["retract"]:  # only the retraction looks back one step
            state["raised"].copy_(raised)
            state["earned_by"].copy_(g)
        return gain

    @staticmethod
    def _direction(state: dict[str, Any], g: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
        if group["direction"] == "momentum":
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(g)
            return state["momentum_buffer"].mul_(group["momentum"]).add_(g)
        beta1, beta2 = group["betas"]
        if "exp_avg" not in state:
            state["step"], state["exp_avg"], state["exp_avg_sq"] = 0, torch.zeros_like(g), torch.zeros_like(g)
        state["step"] += 1
        m = state["exp_avg"].lerp_(g, 1 - beta1)
        v = state["exp_avg_sq"].mul_(beta2).addcmul_(g, g, value=1 - beta2)
        m_hat = m / (1 - beta1 ** state["step"])
        return m_hat / ((v / (1 - beta2 ** state["step"])).sqrt() + group["eps"])


class DeltaBarDeltaRule(StepRule):
    """``DeltaBarDelta`` around the direction ``optimizer.dbd_direction``, at gains on the schedule's rate."""

    retract = False

    @classmethod
    def build(cls, model: nn.Module, cfg: TrialConfig, *, steps: int, batches_per_epoch: int) -> DeltaBarDeltaRule:
        opt = cfg.optimizer
        optimizer = DeltaBarDelta(
            decay_groups(model, cfg.weight_decay), lr=cfg.scaled_peak_lr, direction=opt.dbd_direction,
            kappa=opt.dbd_kappa, phi=opt.dbd_phi, theta=opt.dbd_theta, max_gain=opt.dbd_max_gain,
            momentum=opt.momentum, betas=(opt.beta1, opt.beta2), eps=opt.eps, retract=cls.retract,
        )  # fmt: skip
        return cls(optimizer, model, cfg.grad_clip)

    def step(self, batch: TrainingBatch, lr: float, momentum: float | None = None) -> tuple[torch.Tensor, float, float]:
        for group in self.optimizer.param_groups:
            group["lr"] = lr  # the schedule's rate (constant, with its warmup): the gains multiply it
        loss = self._backward(batch)
        self.optimizer.step()
        return loss, self.optimizer.last_rate, 1.0


class DeltaBarDeltaRetractRule(DeltaBarDeltaRule):
    """``dbd`` whose rate increases are withdrawn when the next minibatch contradicts them."""

    retract = True
