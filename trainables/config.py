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
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, SerializeAsAny, field_validator, model_validator

from trainables.model import ModelConfig
from trainables.schedules import SCHEDULES, Schedule, parse_schedule, schedule_class
from trainables.speed import PRECISIONS
from trainables.step_rules import STEP_RULES, step_rule_class

# A trial shorter than this cannot warm up, evaluate and decay meaningfully.
MIN_STEPS = 10

_STRICT = ConfigDict(extra="forbid", frozen=True)


class OptimizerConfig(BaseModel):
    """The step rule (``trainables.step_rules``) and the settings the built-in rules read."""

    model_config = _STRICT

    name: str = Field("adamw", description="a registered step rule (trainables.step_rules.STEP_RULES)")
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.95, ge=0, lt=1)
    eps: float = Field(1e-8, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    line_search_start: float = Field(1.0, gt=0, description="armijo_sgd: the first step size tried")
    dbd_direction: Literal["adam", "momentum"] = Field("adam", description="dbd rules: the direction their gains scale")
    dbd_kappa: float = Field(0.05, ge=0, description="dbd rules: a gain's additive increase")
    dbd_phi: float = Field(0.1, ge=0, lt=1, description="dbd rules: a gain's multiplicative decrease")
    dbd_theta: float = Field(0.7, ge=0, lt=1, description="dbd rules: the averaging of past gradients")
    dbd_max_gain: float = Field(5.0, ge=1, description="dbd rules: the largest gain on the schedule's rate")
    autolrs_min_lr: float = Field(1e-4, gt=0, description="autolrs: the lowest rate a stage may try")
    autolrs_max_lr: float = Field(1e-2, gt=0, description="autolrs: the highest rate a stage may try")
    autolrs_tau_min: int = Field(100, ge=30, description="autolrs: steps of the first stage (each doubles)")
    autolrs_tau_max: int = Field(800, ge=30, description="autolrs: the most steps of a stage")
    autolrs_candidates: int = Field(10, ge=2, description="autolrs: rates explored per stage")
    autolrs_kappa: float = Field(2.0, ge=0, description="autolrs: the lower confidence bound's width")

    @field_validator("name")
    @classmethod
    def _registered(cls, name: str) -> str:
        if name not in STEP_RULES:
            raise ValueError(STEP_RULES.unknown(name))
        return name

    @model_validator(mode="after")
    def _autolrs_ranges(self) -> OptimizerConfig:
        if self.autolrs_min_lr >= self.autolrs_max_lr:
            raise ValueError(
                f"autolrs_min_lr {self.autolrs_min_lr:g} must be below autolrs_max_lr {self.autolrs_max_lr:g}"
            )
        if self.autolrs_tau_max < self.autolrs_tau_min:
            raise ValueError(
                f"autolrs_tau_max {self.autolrs_tau_max} must be at least autolrs_tau_min {self.autolrs_tau_min}"
            )
        return self


class SelectionConfig(BaseModel):
    """Which training documents a trial uses: a prefix of its strategy's order (``trainables.selection.orderings``)."""

    model_config = _STRICT

    strategy: Literal["full", "random", "uniform"] = "full"
    fraction: float = Field(1.0, gt=0, le=1, description="share of the training documents (or of their tokens)")
    fraction_of: Literal["documents", "tokens"] = Field(
        "documents", description="what fraction counts: documents, or their tokens (subsets of equal size in tokens)"
    )

    @model_validator(mode="after")
    def _full_means_all(self) -> SelectionConfig:
        if self.strategy == "full" and self.fraction != 1:
            raise ValueError(f"fraction must be 1 with strategy full (got {self.fraction}); use random or uniform")
        return self


class PatchConfig(BaseModel):
    """Patch-level training: the first ``lambda`` of a trial's data in patches of ``K`` tokens.

    ``tokens_per_step`` is the recipe: ``equal`` (the paper's) reads as many
    tokens in a patch step as in a token step (batch_size/K sequences of K*T
    tokens, at 1/K of the compute), ``positions`` keeps batch_size sequences of
    T patches (K times the tokens, the compute of a token step).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    K: int = Field(1, ge=1, le=64, description="tokens per patch; 1 is token-level training")
    share: float = Field(0.0, ge=0, lt=1, alias="lambda", description="share of the data trained in patches")
    tokens_per_step: Literal["equal", "positions"] = Field(
        "positions", description="a patch step reads a token step's tokens (equal) or its positions"
    )

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
    precision: Literal[PRECISIONS] = Field(  # type: ignore[valid-type]
        "fp32", description="arithmetic of forward passes: bf16 autocast, or fp32 (docs/spec.md)"
    )
    compile: bool = Field(False, description="torch.compile the model's training step (compiled at the first step)")
    micro_batch_size: int | None = Field(
        None, ge=1, description="samples per forward and backward on a worker; the batch's gradient accumulates"
    )
    optimizer: OptimizerConfig = OptimizerConfig()
    # The family ``schedule.name`` names, looked up in the registry (so only that family's module is
    # imported) rather than a pydantic discriminated union, whose errors would sit at
    # ``schedule.<family>.<setting>`` instead of the flat key.
    schedule: Annotated[SerializeAsAny[Schedule], PlainValidator(parse_schedule)] = Field(
        default_factory=lambda: parse_schedule({})
    )
    selection: SelectionConfig = SelectionConfig()
    patch: PatchConfig = PatchConfig()
    model: ModelConfig = ModelConfig()
    budget: BudgetConfig

    @model_validator(mode="after")
    def _rule_and_schedule_agree(self) -> TrialConfig:
        if not step_rule_class(self.optimizer.name).law_modelled and self.schedule.name != "constant":
            raise ValueError(
                f"optimizer.name {self.optimizer.name} sets or shapes its own rate; schedule.name must be "
                f"constant (got {self.schedule.name})"
            )
        return self

    @model_validator(mode="after")
    def _rule_runs_so(self) -> TrialConfig:
        rule = step_rule_class(self.optimizer.name)
        if self.precision != "fp32" and not rule.mixed_precision:
            raise ValueError(
                f"optimizer.name {self.optimizer.name} compares losses or gradients too finely for "
                f"{self.precision}; precision must be fp32"
            )
        if self.micro_batch_size is not None and self.micro_batch_size < self.batch_size and not rule.accumulates:
            raise ValueError(
                f"optimizer.name {self.optimizer.name} evaluates its loss on the whole batch at once; "
                f"micro_batch_size {self.micro_batch_size} must not be below batch_size {self.batch_size}"
            )
        return self

    @model_validator(mode="after")
    def _patch_rows_whole(self) -> TrialConfig:
        if self.patch.K > 1 and self.patch.tokens_per_step == "equal" and self.batch_size % self.patch.K:
            raise ValueError(
                f"patch.tokens_per_step equal reads batch_size/K sequences of K*T tokens a patch step; batch_size "
                f"{self.batch_size} is not a multiple of K {self.patch.K}"
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
    def patch_rows(self) -> int:
        """Sequences of K*T tokens in a patch step: batch_size, or batch_size/K with ``tokens_per_step`` equal."""
        return self.batch_size // self.patch.K if self.patch.tokens_per_step == "equal" else self.batch_size

    @property
    def patch_step_compute(self) -> int:
        """Compute of one patch step in token-equivalents: T positions for each of its sequences."""
        return self.patch_rows * self.model.seq_len

    @property
    def patch_step_tokens(self) -> int:
        """Tokens one patch step reads."""
        return self.patch_step_compute * self.patch.K

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
        patch_steps = int(self.patch.share * data // self.patch_step_tokens)
        token_steps = int((self.budget.compute - patch_steps * self.patch_step_compute) // self.tokens_per_step)
        return patch_steps, token_steps

    @property
    def total_steps(self) -> int:
        return sum(self.phase_steps)

    @property
    def phase_budgets(self) -> tuple[float, float]:
        """Compute of the patch phase and of the token phase."""
        patch_steps, _ = self.phase_steps
        patch = patch_steps * self.patch_step_compute
        return float(patch), self.budget.compute - patch

    def planned_lrs(self) -> np.ndarray | None:
        """The learning rate of every step, known before training starts; each phase has its own schedule.

        None for rules that choose their rate as they go (``chooses_own_rate``):
        they report the rate they used instead.
        """
        if step_rule_class(self.optimizer.name).chooses_own_rate:
            return None
        per_phase = []
        for tokens, steps in zip((self.patch_step_tokens, self.tokens_per_step), self.phase_steps, strict=True):
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


# Flat keys whose values are registered names: their choices are whatever is registered when asked.
_REGISTERED = {"optimizer.name": STEP_RULES, "schedule.name": SCHEDULES}


def trial_fields() -> dict[str, TrialField]:
    """Every flat key of ``TrialConfig`` with the kind of value it takes; ``schedule.*``: every registered family's."""
    return dict(_leaf_fields(TrialConfig, ""))


def _leaf_fields(cls: type, prefix: str) -> typing.Iterator[tuple[str, TrialField]]:
    for name, info in cls.__pydantic_fields__.items():
        key = f"{prefix}{info.alias or name}"
        annotation = info.annotation
        if key in _REGISTERED:
            yield key, TrialField(key, "categorical", tuple(_REGISTERED[key]))
        elif key == "schedule":
            for family in SCHEDULES:
                yield from _leaf_fields(schedule_class(family), f"{key}.")
        elif hasattr(annotation, "__pydantic_fields__"):
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
