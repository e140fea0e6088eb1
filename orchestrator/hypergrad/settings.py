"""The ``hypergrad`` searcher's spec section: its settings, what it asks of the rest of the spec, its searcher.

See docs/hypergrad.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from orchestrator.hypergrad.searcher import CHAINS_FILE, HypergradSearcher
from orchestrator.searchers import METRIC, MODE
from orchestrator.spec import SearcherSection, SpecContext
from search_spaces.build import Knob, grid_points
from trainables.config import TrialConfig
from trainables.hypergrad.hyperparameters import Hyperparameters
from trainables.hypergrad.tasks import lm_group_names

if TYPE_CHECKING:
    from orchestrator.spec import SweepSpec

# What the searcher learns itself, or what the reversible trainer does not do.
# The reversible trainer's arithmetic is exact fixed point on the whole batch: the speed settings do not apply.
_OWNED = ("peak_lr", "weight_decay", "lr_scaling", "grad_clip", "optimizer.", "schedule.", "patch.", "target_loss",
          "gns", "precision", "compile", "micro_batch_size")  # fmt: skip


class HypergradSettings(SearcherSection):
    """``searcher: hypergrad``: chains of meta-iterations over a shuffled cycle of the grid's points."""

    name: Literal["hypergrad"] = "hypergrad"
    hooks: ClassVar[str | None] = "orchestrator.hypergrad.hooks:HypergradHooks"
    choice_knobs_only: ClassVar[bool] = True
    seed: int = Field(0, ge=0)
    chains: int = Field(4, ge=1, description="independent chains, each with its own seed and knob values")
    meta_steps: int = Field(10, ge=1, description="meta-iterations per chain at most")
    meta_lr: float = Field(0.05, gt=0, description="Adam's step on the log/logit hyperparameters")
    patience: int = Field(2, ge=1, description="meta-iterations the norm must stay grown to end a chain")
    growth: float = Field(5.0, gt=1, description="a chain ends when its meta-gradient norm exceeds this many times "
                          "its smallest")  # fmt: skip
    blocks: int = Field(10, ge=1, le=100, description="blocks of steps with their own rate and momentum")
    init_lr: float = Field(0.05, gt=0, description="every block's and group's first learning rate")
    init_momentum: float = Field(0.9, gt=0, lt=1, description="the first momentum")
    init_weight_decay: float = Field(1e-4, gt=0, description="the first L2 penalty per group")

    def trial_count(self, requested: int | None, knobs: Sequence[Knob], problems: list[str]) -> int:
        most = self.chains * self.meta_steps
        if requested is not None and requested != most:
            problems.append(
                f"trials: the hypergrad searcher runs at most searcher.chains x searcher.meta_steps = {most} "
                "meta-iterations; drop trials or set it to that"
            )
        return most

    def check(self, context: SpecContext, problems: list[str]) -> None:
        """The reversible trainer runs SGD with momentum at token level on one worker, every meta-iteration to
        the end."""
        owned = [f"search.{k.name}" for k in context.knobs if k.name.startswith(_OWNED) or k.name == "seed"]
        owned += [f"train.{key}" for key in context.train if key.startswith(_OWNED) or key == "seed"]
        for where in owned:
            problems.append(
                f"{where}: the hypergrad searcher sets this itself or does without (rates, momentum and weight "
                "decay are learned, the optimizer is reversible SGD with momentum at token level, each chain has "
                "its own seed, and every meta-iteration trains its whole budget, on whole batches in exact fixed-point "
                "arithmetic); drop it"
            )
        if context.scheduler.name != "fifo":
            problems.append(f"scheduler.name: the hypergrad searcher needs every meta-iteration to finish; use "
                            f"fifo (got {context.scheduler.name})")  # fmt: skip
        if context.resources is not None and context.resources.distributed:
            problems.append("resources: the reversible trainer runs on one CPU worker; drop workers and gpus")
        if context.fixed is not None:
            self._check_steps(context.knobs, context.fixed, problems)

    def _check_steps(self, knobs: Sequence[Knob], fixed: Mapping[str, Any], problems: list[str]) -> None:
        """Every block needs a step, at the largest batch size too."""
        default_batch = TrialConfig.model_fields["batch_size"].default
        sizes = next((k.extremes() for k in knobs if k.name == "batch_size"), (fixed.get("batch_size", default_batch),))
        fewest = min(fixed["budget.compute"] // (int(b) * fixed["model.seq_len"]) for b in sizes)
        if fewest < self.blocks:
            problems.append(
                f"searcher.blocks: {self.blocks} blocks need at least as many steps, but budget.compute gives "
                f"{fewest:g} at the largest batch size"
            )

    def build(self, spec: SweepSpec) -> HypergradSearcher:
        """Chains over a shuffled cycle of the spec's knob combinations, each with its own seed."""
        initial = Hyperparameters.initial(
            blocks=self.blocks, groups=len(lm_group_names(spec.model)), lr=self.init_lr,
            momentum=self.init_momentum, weight_decay=self.init_weight_decay,
        )  # fmt: skip
        points = grid_points(spec.knobs) if spec.knobs else [{}]
        order = np.random.default_rng(self.seed).permutation(len(points))
        chains = [{**points[order[i % len(points)]], "seed": self.seed + i} for i in range(self.chains)]
        return HypergradSearcher(
            initial, chains, meta_steps=self.meta_steps, meta_lr=self.meta_lr, patience=self.patience,
            growth=self.growth, record=spec.output_dir.resolve() / CHAINS_FILE, metric=METRIC, mode=MODE,
        )  # fmt: skip
