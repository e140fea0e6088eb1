"""The ``autolrs`` step rule: stages of tau steps, each at the rate its explorations forecast best.

See ``trainables.step_rules.autolrs`` and docs/schedules.md.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from trainables.speed import fused_adamw
from trainables.step_rules.autolrs._bayes import RateSearch
from trainables.step_rules.autolrs._forecast import exponential_forecast
from trainables.step_rules.base import StepRule, TrainingBatch, decay_groups

if TYPE_CHECKING:
    from trainables.config import TrialConfig

# The forecast fits three parameters: an exploration has at least this many steps.
MIN_EXPLORATION_STEPS = 3


class AutoLRSRule(StepRule):
    """AdamW whose rate is chosen stage by stage on the fly (Jin et al. 2021, arXiv 2105.10762).

    A stage of ``tau`` training steps starts by saving the weights and the optimizer's state, then
    tries ``candidates`` rates, each for ``tau / 10`` steps from the saved state (a Gaussian process
    over the log rate proposes each one, ``RateSearch``); each exploration's losses are fitted by a
    decaying exponential and forecast ``tau`` steps on. The stage then trains ``tau`` steps from the
    saved state at the rate with the lowest forecast, and the next stage's ``tau`` doubles, up to
    ``tau_max``. Every step, exploring or not, is a training step: it reads a batch, is charged to
    ``compute`` and reports the rate it used. Evaluations during a stage's explorations see the saved
    weights, the run's own; the explorations' are set aside and put back.
    """

    chooses_own_rate = True
    single_worker_only = True  # its choice reads the losses of this worker's rows

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        model: nn.Module,
        grad_clip: float,
        *,
        low: float,
        high: float,
        tau_min: int,
        tau_max: int,
        candidates: int,
        kappa: float,
        seed: int,
        steps: int,
    ) -> None:
        if tau_min // 10 < MIN_EXPLORATION_STEPS or tau_max < tau_min or candidates < 2:
            raise ValueError(
                f"need tau_min >= {10 * MIN_EXPLORATION_STEPS}, tau_max >= tau_min and at least 2 candidates; "
                f"got {tau_min}, {tau_max}, {candidates}"
            )
        super().__init__(optimizer, model, grad_clip)
        self._bounds, self._kappa, self._seed = (low, high), kappa, seed
        self._tau_max, self._candidates = tau_max, candidates
        self.tau, self.stage = tau_min, 0  # the nominal length of the next stage, and stages begun
        self.stage_tau = tau_min  # the length of the stage under way
        self.steps_left = steps
        self.exploring, self.candidate, self.in_phase = True, 0, 0
        self.rate: float | None = None  # the rate of the exploration under way, or the stage's chosen rate
        self._losses: list[torch.Tensor] = []
        self._saved: dict[str, Any] | None = None  # the stage's starting weights and optimizer state
        self._search: RateSearch | None = None
        self._aside: dict[str, torch.Tensor] | None = None  # exploration weights, during an evaluation

    @classmethod
    def build(cls, model: nn.Module, cfg: TrialConfig, *, steps: int, batches_per_epoch: int) -> AutoLRSRule:
        opt = cfg.optimizer
        device = next(model.parameters()).device
        optimizer = torch.optim.AdamW(
            decay_groups(model, cfg.weight_decay), lr=opt.autolrs_min_lr, betas=(opt.beta1, opt.beta2),
            eps=opt.eps, fused=fused_adamw(device) or None,
        )  # fmt: skip
        return cls(
            optimizer, model, cfg.grad_clip, low=opt.autolrs_min_lr, high=opt.autolrs_max_lr,
            tau_min=opt.autolrs_tau_min, tau_max=opt.autolrs_tau_max, candidates=opt.autolrs_candidates,
            kappa=opt.autolrs_kappa, seed=cfg.seed, steps=steps,
        )  # fmt: skip

    @property
    def exploration_steps(self) -> int:
        return self.stage_tau // 10

    def step(self, batch: TrainingBatch, lr: float, momentum: float | None = None) -> tuple[torch.Tensor, float, float]:
        if self.exploring and self.in_phase == 0:
            if self.candidate == 0:
                self._begin_stage()
            if self._search is not None:
                self.rate = self._search.ask()
        assert self.rate is not None
        rate = self.rate
        for group in self.optimizer.param_groups:
            group["lr"] = rate
        loss = self._backward(batch)
        self.optimizer.step()
        self.in_phase += 1
        self.steps_left -= 1
        if self.exploring:
            self._losses.append(loss)
            if self.in_phase == self.exploration_steps:
                self._end_exploration()
        elif self.in_phase == self.stage_tau:
            self.tau = min(2 * self.tau, self._tau_max)
            self.exploring, self.candidate, self.in_phase = True, 0, 0
        return loss, rate, 1.0

    def _begin_stage(self) -> None:
        self.stage_tau = min(self.tau, self.steps_left // 2)
        if self.stage_tau // 10 < MIN_EXPLORATION_STEPS:  # too few steps left to explore: train them out
            self.exploring, self.stage_tau = False, self.steps_left
            self.rate = self.rate or math.sqrt(self._bounds[0] * self._bounds[1])
            return
        self.stage += 1
        self._saved = {"model": _copied(self.model.state_dict()), "optimizer": _copied(self.optimizer.state_dict())}
        rng = np.random.default_rng([self._seed, self.stage])
        self._search = RateSearch(*self._bounds, kappa=self._kappa, rng=rng)

    def _end_exploration(self) -> None:
        assert self._search is not None and self._saved is not None and self.rate is not None
        # The only read of the device in a stage's explorations: once per exploration.
        losses = torch.stack(self._losses).double().cpu().numpy()
        self._search.tell(self.rate, exponential_forecast(losses, horizon=self.stage_tau))
        self._losses = []
        self._restore(self._saved)
        self.candidate += 1
        self.in_phase = 0
        if self.candidate == self._candidates:
            self.exploring, self.rate = False, self._search.best
            self._saved = self._search = None

    def _restore(self, saved: dict[str, Any]) -> None:
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(_copied(saved["optimizer"]))

    def eval(self) -> None:
        if self._saved is not None and (self.candidate or self.in_phase):
            self._aside = _copied(self.model.state_dict())
            self.model.load_state_dict(self._saved["model"])

    def train(self) -> None:
        if self._aside is not None:
            self.model.load_state_dict(self._aside)
            self._aside = None

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(), "tau": self.tau, "stage": self.stage,
            "stage_tau": self.stage_tau, "steps_left": self.steps_left,
            "exploring": self.exploring, "candidate": self.candidate, "in_phase": self.in_phase, "rate": self.rate,
            "losses": [float(loss) for loss in self._losses], "saved": self._saved,
            "search": None if self._search is None else self._search.state_dict(),
        }  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.tau, self.stage, self.exploring = state["tau"], state["stage"], state["exploring"]
        self.stage_tau, self.steps_left = state["stage_tau"], state["steps_left"]
        self.candidate, self.in_phase, self.rate = state["candidate"], state["in_phase"], state["rate"]
        device = next(self.model.parameters()).device
        self._losses = [torch.tensor(loss, device=device) for loss in state["losses"]]
        self._saved = state["saved"]
        self._search = None
        if state["search"] is not None:
            self._search = RateSearch(*self._bounds, kappa=self._kappa, rng=np.random.default_rng())
            self._search.load_state_dict(state["search"])


def _copied(state: Any) -> Any:
    """A deep copy of a state dict's tensors (and the containers around them)."""
    if isinstance(state, torch.Tensor):
        return state.detach().clone()
    if isinstance(state, dict):
        return {key: _copied(value) for key, value in state.items()}
    if isinstance(state, list):
        return [_copied(value) for value in state]
    return state
