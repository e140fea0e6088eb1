"""A trial's configuration: the one schema every knob of a sweep is checked against.

Tune hands a trial a flat dict with dotted keys (``peak_lr``,
``schedule.name``, ``model.d_model``); ``TrialConfig.from_flat`` turns it into
this validated, nested form. The orchestrator validates a spec's search space
against the same fields, so a value a trial would reject is rejected before a
sweep starts, with the knob named.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from trainables import schedules
from trainables.laws.multipower import MPLParams, mpl_optimal_rates
from trainables.model import ModelConfig

# A trial shorter than this cannot warm up, evaluate and decay meaningfully.
MIN_STEPS = 10

_STRICT = ConfigDict(extra="forbid", frozen=True)


# Optimizers that choose their own step size every step; a trial with one has no planned rates.
SELF_RATED = ("armijo_sgd", "vsgd")


class OptimizerConfig(BaseModel):
    """The step rule. ``adamw`` and ``sgd`` follow the schedule; the others set or shape their own rate."""

    model_config = _STRICT

    name: Literal["adamw", "sgd", "schedule_free_adamw", "schedule_free_sgd", "armijo_sgd", "vsgd"] = "adamw"
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.95, ge=0, lt=1)
    eps: float = Field(1e-8, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    line_search_start: float = Field(1.0, gt=0, description="armijo_sgd: the first step size tried")


class MPLLawConfig(BaseModel):
    """The Multi-Power Law's parameters for ``mpl_optimal``; a spec names a fit file, the orchestrator fills them in."""

    model_config = _STRICT

    L0: float | None = None
    A: float | None = Field(None, ge=0)
    alpha: float | None = Field(None, gt=0)
    B: float | None = Field(None, ge=0)
    C: float | None = Field(None, gt=0)
    beta: float | None = Field(None, gt=0)
    gamma: float | None = Field(None, gt=0)

    def params(self) -> MPLParams | None:
        values = self.model_dump()
        return None if any(v is None for v in values.values()) else MPLParams(**values)


class ScheduleConfig(BaseModel):
    """A learning-rate schedule and its parameters; each parameter names the families that read it."""

    model_config = _STRICT

    name: Literal[
        "constant",
        "cosine",
        "wsd",
        "two_step",
        "power",
        "inverse_power",
        "one_cycle",
        "explore_converge",
        "mpl_optimal",
    ] = "constant"
    warmup_frac: float = Field(0.05, ge=0, lt=1, description="all but one_cycle: share of steps warming up")
    min_lr_frac: float = Field(0.1, ge=0, le=1, description="cosine, wsd (linear, cosine): final rate / peak")
    decay_frac: float = Field(0.2, gt=0, le=1, description="wsd, power: share of steps decaying")
    decay_shape: Literal["linear", "cosine", "exp"] = "linear"
    half_life_frac: float = Field(0.25, gt=0, le=1, description="wsd exp: half-life as a share of the decay")
    step_frac: float = Field(0.5, gt=0, lt=1, description="two_step: share of steps before the drop")
    step_factor: float = Field(0.1, gt=0, lt=1, description="two_step: rate after the drop / peak")
    power_a: float = Field(4.0, gt=0, description="power: a in min(peak, b a n^c)")
    power_c: float = Field(-0.51, lt=0, description="power: c in min(peak, b a n^c)")
    decay_exponent: float = Field(0.5, gt=0, le=1, description="inverse_power, explore_converge: beta")
    decay_timescale_frac: float = Field(0.05, gt=0, le=1, description="inverse_power, explore_converge: t0 / steps")
    explore_frac: float = Field(0.5, gt=0, lt=1, description="explore_converge: share of steps at the high rate")
    cycle_rise_frac: float = Field(0.3, gt=0, lt=1, description="one_cycle: share of steps rising")
    cycle_div: float = Field(25.0, ge=1, description="one_cycle: peak / starting rate")
    cycle_final_div: float = Field(1e4, ge=1, description="one_cycle: starting rate / final rate")
    momentum_low: float = Field(0.85, ge=0, lt=1, description="one_cycle: momentum (or beta1) at the peak rate")
    momentum_high: float = Field(0.95, ge=0, lt=1, description="one_cycle: momentum (or beta1) at both ends")
    mpl_law: MPLLawConfig = MPLLawConfig()

    @model_validator(mode="after")
    def _phases_fit(self) -> ScheduleConfig:
        if self.name in ("wsd", "power") and self.warmup_frac + self.decay_frac > 1:
            raise ValueError(f"warmup_frac ({self.warmup_frac}) + decay_frac ({self.decay_frac}) must not exceed 1")
        if self.name == "explore_converge" and self.warmup_frac + self.explore_frac >= 1:
            raise ValueError(f"warmup_frac ({self.warmup_frac}) + explore_frac ({self.explore_frac}) must be below 1")
        if self.name == "one_cycle" and self.momentum_low > self.momentum_high:
            raise ValueError(f"momentum_low ({self.momentum_low}) must not exceed momentum_high ({self.momentum_high})")
        if self.name == "mpl_optimal" and self.mpl_law.params() is None:
            missing = [k for k, v in self.mpl_law.model_dump().items() if v is None]
            raise ValueError(
                f"mpl_optimal needs the fitted law: set schedule.mpl_fit to a fit file in the spec "
                f"(missing schedule.mpl_law.{', '.join(missing)})"
            )
        return self

    def multipliers(self, total_steps: int, *, peak: float, batch_size: int, tokens_per_step: int) -> np.ndarray:
        """Planned rate of every step, as a multiple of ``peak``."""
        step = np.arange(total_steps)
        n_warmup = schedules.warmup_steps(total_steps, self.warmup_frac)
        n_decay = max(1, round(self.decay_frac * total_steps))
        t0 = max(self.decay_timescale_frac * total_steps, 1.0)
        if self.name == "constant":
            return schedules.constant(step, total_steps, n_warmup=n_warmup)
        if self.name == "cosine":
            return schedules.cosine(step, total_steps, n_warmup=n_warmup, floor=self.min_lr_frac)
        if self.name == "wsd":
            return schedules.wsd(
                step, total_steps, n_warmup=n_warmup, n_decay=n_decay, floor=self.min_lr_frac,
                shape=self.decay_shape, half_life=self.half_life_frac * n_decay,
            )  # fmt: skip
        if self.name == "two_step":
            n_drop = max(round(self.step_frac * total_steps), n_warmup)
            return schedules.two_step(step, total_steps, n_warmup=n_warmup, n_drop=n_drop, factor=self.step_factor)
        if self.name == "power":
            return schedules.power(
                step, total_steps, n_warmup=n_warmup, n_decay=n_decay, peak=peak, batch_size=batch_size,
                tokens_per_step=tokens_per_step, a=self.power_a, c=self.power_c,
            )  # fmt: skip
        if self.name == "inverse_power":
            return schedules.inverse_power(step, total_steps, n_warmup=n_warmup, t0=t0, beta=self.decay_exponent)
        if self.name == "explore_converge":
            n_explore = round(self.explore_frac * total_steps)
            return schedules.explore_converge(
                step, total_steps, n_warmup=n_warmup, n_explore=n_explore, t0=t0, beta=self.decay_exponent
            )
        if self.name == "mpl_optimal":
            law = self.mpl_law.params()
            return mpl_optimal_rates(law, total_steps, n_warmup, peak) / peak
        return schedules.one_cycle(
            step, total_steps, rise_frac=self.cycle_rise_frac, div=self.cycle_div, final_div=self.cycle_final_div
        )

    def momenta(self, total_steps: int) -> np.ndarray | None:
        """Planned momentum (or Adam beta1) of every step, for schedules that cycle it; else None."""
        if self.name != "one_cycle":
            return None
        return schedules.one_cycle_momentum(
            np.arange(total_steps), total_steps, rise_frac=self.cycle_rise_frac,
            low=self.momentum_low, high=self.momentum_high,
        )  # fmt: skip


class SelectionConfig(BaseModel):
    """Which training documents a trial uses: a prefix of its strategy's order (``trainables.selection.orderings``)."""

    model_config = _STRICT

    strategy: Literal["full", "random", "uniform"] = "full"
    fraction: float = Field(1.0, gt=0, le=1, description="share of the training documents")

    @model_validator(mode="after")
    def _full_means_all(self) -> SelectionConfig:
        if self.strategy == "full" and self.fraction != 1:
            raise ValueError(f"fraction must be 1 with strategy full (got {self.fraction}); use random or uniform")
        return self


class PatchConfig(BaseModel):
    """Patch-level training: the first ``lambda`` of a trial's data in patches of ``K`` tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    K: int = Field(1, ge=1, le=64, description="tokens per patch; 1 is token-level training")
    share: float = Field(0.0, ge=0, lt=1, alias="lambda", description="share of the data trained in patches")

    @model_validator(mode="after")
    def _both_or_neither(self) -> PatchConfig:
        if self.K == 1 and self.share > 0:
            raise ValueError(f"lambda must be 0 when K is 1 (token-level training), got {self.share}")
        if self.K > 1 and self.share == 0:
            raise ValueError(f"lambda must be above 0 when K is {self.K}; K 1 is token-level training")
        return self


class BudgetConfig(BaseModel):
    model_config = _STRICT

    compute: float = Field(gt=0, description="token-equivalents of forward/backward work per trial")


class TrialConfig(BaseModel):
    """Everything one trial needs to know; flat keys are the dotted paths of these fields."""

    model_config = _STRICT

    seed: int = Field(0, ge=0)
    peak_lr: float = Field(3e-3, gt=0)
    batch_size: int = Field(16, ge=1)
    lr_scaling: Literal["none", "sqrt", "linear"] = Field(
        "none", description="scale peak_lr by (batch_size / lr_reference_batch) to the 1/2 or the 1st power"
    )
    lr_reference_batch: int = Field(16, ge=1, description="the batch size peak_lr is meant for, with lr_scaling")
    weight_decay: float = Field(0.1, ge=0)
    grad_clip: float = Field(1.0, ge=0, description="max gradient norm; 0 turns clipping off")
    eval_every: int = Field(25, ge=1, description="optimizer steps between reports")
    checkpoint_every: int = Field(10, ge=0, description="reports between checkpoints of a Tune trial; 0: none")
    gns: bool = Field(False, description="report the gradient noise scale (extra backward passes at each report)")
    target_loss: float | None = Field(None, gt=0, description="stop at the first report with val_loss at or below it")
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    selection: SelectionConfig = SelectionConfig()
    patch: PatchConfig = PatchConfig()
    model: ModelConfig = ModelConfig()
    budget: BudgetConfig

    @model_validator(mode="after")
    def _rule_and_schedule_agree(self) -> TrialConfig:
        if self.optimizer.name not in ("adamw", "sgd") and self.schedule.name != "constant":
            raise ValueError(
                f"optimizer.name {self.optimizer.name} sets or shapes its own rate; schedule.name must be "
                f"constant (got {self.schedule.name})"
            )
        return self

    @model_validator(mode="after")
    def _enough_steps(self) -> TrialConfig:
        for phase, steps in zip(("patch", "token"), self.phase_steps, strict=True):
            if steps < MIN_STEPS and (phase == "token" or self.patch.K > 1):
                raise ValueError(
                    f"budget.compute {self.budget.compute:g} gives the {phase} phase {steps} steps at batch_size "
                    f"{self.batch_size} x seq_len {self.model.seq_len}; at least {MIN_STEPS} are needed"
                )
        return self

    @property
    def scaled_peak_lr(self) -> float:
        """``peak_lr`` for this batch size: square-root scaling suits Adam, linear SGD (``lr_scaling``)."""
        power = {"none": 0.0, "sqrt": 0.5, "linear": 1.0}[self.lr_scaling]
        return self.peak_lr * (self.batch_size / self.lr_reference_batch) ** power

    @property
    def tokens_per_step(self) -> int:
        """Compute of one step in token-equivalents, in either phase: T positions for each sample."""
        return self.batch_size * self.model.seq_len

    @property
    def phase_steps(self) -> tuple[int, int]:
        """Steps of the patch phase and of the token phase within the compute budget.

        A trial consumes D tokens, lambda*D in patches at 1/K of the compute per
        token and the rest one by one, so D = compute / (lambda/K + 1 - lambda);
        the token phase gets whatever compute the patch phase leaves.
        """
        if self.patch.K == 1:
            return 0, int(self.budget.compute // self.tokens_per_step)
        data = self.budget.compute / (self.patch.share / self.patch.K + 1 - self.patch.share)
        patch_steps = int(self.patch.share * data // (self.tokens_per_step * self.patch.K))
        token_steps = int((self.budget.compute - patch_steps * self.tokens_per_step) // self.tokens_per_step)
        return patch_steps, token_steps

    @property
    def total_steps(self) -> int:
        return sum(self.phase_steps)

    @property
    def phase_budgets(self) -> tuple[float, float]:
        """Compute of the patch phase and of the token phase."""
        patch_steps, _ = self.phase_steps
        patch = patch_steps * self.tokens_per_step
        return float(patch), self.budget.compute - patch

    def planned_lrs(self) -> np.ndarray | None:
        """The learning rate of every step, known before training starts; each phase has its own schedule.

        None for optimizers that choose their rate as they go (``SELF_RATED``):
        they report the rate they used instead.
        """
        if self.optimizer.name in SELF_RATED:
            return None
        per_phase = []
        for patches, steps in zip((self.patch.K, 1), self.phase_steps, strict=True):
            tokens = self.tokens_per_step * patches
            multipliers = self.schedule.multipliers(
                steps, peak=self.scaled_peak_lr, batch_size=self.batch_size, tokens_per_step=tokens
            )
            per_phase.append(self.scaled_peak_lr * multipliers)
        return np.concatenate(per_phase)

    def planned_momenta(self) -> np.ndarray | None:
        """Momentum (Adam beta1) of every step when the schedule cycles it, else None."""
        phases = [self.schedule.momenta(steps) for steps in self.phase_steps]
        return None if phases[0] is None else np.concatenate(phases)

    @classmethod
    def from_flat(cls, flat: Mapping[str, Any]) -> TrialConfig:
        """Validate a flat dict of dotted keys, as Tune hands it to a trial."""
        return cls.model_validate(unflatten(flat))

    def to_flat(self) -> dict[str, Any]:
        return flatten(self.model_dump(by_alias=True))


# Sections fixed for a whole sweep: every trial must see the same model and budget
# so that their losses compare.
SWEEP_LEVEL_SECTIONS = ("model", "budget")


@dataclass(frozen=True)
class TrialField:
    """What a flat key of ``TrialConfig`` accepts: ``kind`` is int, float or categorical."""

    key: str
    kind: Literal["int", "float", "categorical"]
    choices: tuple[Any, ...] = ()


def trial_fields() -> dict[str, TrialField]:
    """Every flat key of ``TrialConfig`` with the kind of value it takes."""
    return dict(_leaf_fields(TrialConfig, ""))


def _leaf_fields(cls: type, prefix: str) -> typing.Iterator[tuple[str, TrialField]]:
    for name, info in cls.__pydantic_fields__.items():
        key = f"{prefix}{info.alias or name}"
        annotation = info.annotation
        if hasattr(annotation, "__pydantic_fields__"):
            yield from _leaf_fields(annotation, f"{key}.")
        elif typing.get_origin(annotation) is Literal:
            yield key, TrialField(key, "categorical", typing.get_args(annotation))
        elif annotation is int:
            yield key, TrialField(key, "int")
        else:
            yield key, TrialField(key, "float")


def flatten(nested: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in nested.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1}`` -> ``{"a": {"b": 1}}``."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested
