"""Loading a sweep spec: ``load_spec`` returns a ``SweepSpec`` or raises ``SpecError`` listing every problem.

See docs/spec.md.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from orchestrator.spec.checks import check_combinations, check_knob_values, check_workers, fixed_config, only_choices
from orchestrator.spec.errors import SpecError, required, validate
from orchestrator.spec.knobs import member_settings_as_knobs, parse_knobs, train_values
from orchestrator.spec.sections import (
    DataSection,
    ResourcesSection,
    TopLevel,
    TrackingSection,
    data_section,
    model_config,
)
from orchestrator.spec.settings import SchedulerSection, SearcherSection, SpecContext, parse_settings
from search_spaces.build import Knob
from trainables.config import BudgetConfig, flatten, trial_fields
from trainables.data.prepare import SelectionPlan
from trainables.data.tokenizer import TokenizerConfig
from trainables.model import ModelConfig


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep. ``train`` holds fixed trial keys; ``knobs`` the searched ones, in spec order."""

    name: str
    output_dir: Path
    data: DataSection
    model: ModelConfig
    budget: BudgetConfig
    train: Mapping[str, Any]
    knobs: tuple[Knob, ...]
    searcher: SearcherSection
    scheduler: SchedulerSection
    trials: int
    concurrency: int | None
    resources: ResourcesSection
    tracking: TrackingSection
    source: str
    storage: str | None = None  # trials' results and checkpoints (orchestrator.storage); None: DIR/tune

    def selection_plan(self) -> SelectionPlan:
        """The orders this sweep's trials can draw from, prepared once before any trial runs."""
        strategies = self._possible("selection.strategy")
        fractions = [float(f) for f in self._possible("selection.fraction")]
        by_tokens = "tokens" in self._possible("selection.fraction_of")
        return SelectionPlan(
            strategies=tuple(s for s in ("random", "uniform") if s in strategies),
            max_fraction=max(fractions),
            embedding=self.data.embedding,
            seed=self.data.selection_seed,
            max_token_fraction=max(fractions) if by_tokens else 0.0,
        )

    def _possible(self, key: str) -> tuple[Any, ...]:
        """Every value (or both ends of the range) a trial-config key can take in this sweep."""
        for knob in self.knobs:
            if knob.name == key:
                return knob.extremes()
        return (self.fixed_config()[key],)

    def fixed_config(self) -> dict[str, Any]:
        """Every trial-config key that no knob sets, with its value for this sweep."""
        return fixed_config(self.model, self.budget, self.train, {k.name for k in self.knobs})

    def summary(self) -> dict[str, Any]:
        """The sweep's settings as flat scalars: its MLflow parent-run params and its identity.

        Of the searcher and scheduler, the name and the settings that algorithm reads (its only fields).
        """
        flat = flatten(
            {
                "data": self.data.model_dump(),
                "model": asdict(self.model),
                "budget": self.budget.model_dump(),
                "train": dict(self.train),
                "searcher": self.searcher.model_dump(),
                "scheduler": self.scheduler.model_dump(),
                "resources": self.resources.model_dump(),
            }
        )
        flat.update(name=self.name, trials=self.trials, concurrency=self.concurrency or "auto")
        flat["search"] = ",".join(k.name for k in self.knobs)
        return flat

    def spec_hash(self) -> str:
        """Identity of the sweep: same hash, same trials (tracking and output place aside)."""
        knobs = [asdict(k) | {"when": {n: list(v) for n, v in k.when.items()}} for k in self.knobs]
        payload = json.dumps({"settings": self.summary(), "knobs": knobs}, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a spec file (``-``: standard input); raise ``SpecError`` listing every problem."""
    path = Path(path)
    try:
        source = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError([f"{path}: no such spec file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError([f"{path}: cannot be read ({exc})"]) from None
    try:
        raw = yaml.safe_load(source)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        reason = getattr(exc, "problem", None) or str(exc)
        raise SpecError([f"{path}: not valid YAML{where}: {reason}"]) from None
    return parse_spec(raw, source)


def parse_spec(raw: Any, source: str = "") -> SweepSpec:
    """Validate an already-parsed spec mapping; ``source`` is its text (by default, the mapping as YAML)."""
    problems: list[str] = []
    if not isinstance(raw, Mapping):
        raise SpecError([f"spec: must be a mapping of sections, got {type(raw).__name__}"])
    # A bad top-level field must not hide the problems in the sections.
    top = validate(TopLevel, raw, "", problems) or TopLevel.model_construct(
        **{k: v for k, v in raw.items() if k in TopLevel.model_fields}
    )
    if isinstance(top.concurrency, int) and top.concurrency < 1:
        problems.append(f"concurrency: must be 'auto' or at least 1 (got {top.concurrency})")

    data = data_section(top.data, problems)
    budget = required(BudgetConfig, top.budget, "budget", problems)
    model = model_config(top.model, problems, (data.tokenizer if data else TokenizerConfig()).model_vocab_size)
    searcher, scheduler = _algorithms(top, problems)
    resources = validate(ResourcesSection, top.resources or {}, "resources", problems)
    tracking = validate(TrackingSection, top.tracking or {}, "tracking", problems)

    fields = trial_fields()
    train = train_values(top.train, fields, problems)
    knobs = parse_knobs(top.search, fields, set(train), problems)
    train, knobs = member_settings_as_knobs(train, knobs, problems)
    if searcher.choice_knobs_only:
        only_choices(knobs, searcher.name, problems)
    trials = searcher.trial_count(top.trials, knobs, problems)

    fixed = None
    if model is not None and budget is not None:
        fixed = fixed_config(model, budget, train, {k.name for k in knobs})
        check_knob_values(knobs, fixed, problems)
        if resources is not None and resources.workers > 1:
            check_workers(resources.workers, knobs, fixed, problems)
    context = SpecContext(searcher, scheduler, resources, tuple(knobs), train, fixed)
    searcher.check(context, problems)
    scheduler.check(context, problems)
    # Combinations are only worth checking once every single value is fine.
    if fixed is not None and not problems:
        check_combinations(knobs, fixed, problems)
    if problems:
        raise SpecError(problems)
    concurrency = None if top.concurrency == "auto" else int(top.concurrency)
    output_dir = Path(top.output_dir) if top.output_dir else Path("sweeps") / top.name
    return SweepSpec(
        top.name, output_dir, data, model, budget, train, tuple(knobs), searcher, scheduler, trials,
        concurrency, resources, tracking, source or yaml.safe_dump(dict(raw), sort_keys=False), top.storage,
    )  # fmt: skip


def _algorithms(top: TopLevel, problems: list[str]) -> tuple[SearcherSection, SchedulerSection]:
    """The searcher and the scheduler the spec names, each read by its registered settings class."""
    # The registries hold subclasses of this package's sections, so they import this package: read them once
    # it is loaded.
    from orchestrator.schedulers import DEFAULT_SCHEDULER, SCHEDULERS
    from orchestrator.searchers import DEFAULT_SEARCHER, SEARCHERS

    searcher = parse_settings(SEARCHERS, DEFAULT_SEARCHER, top.searcher, problems)
    return searcher, parse_settings(SCHEDULERS, DEFAULT_SCHEDULER, top.scheduler, problems)
