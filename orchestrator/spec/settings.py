"""The ``searcher`` and ``scheduler`` sections: one settings class per name registered in
``orchestrator.searchers.SEARCHERS`` or ``orchestrator.schedulers.SCHEDULERS``, with the hooks the loader calls.

See docs/spec.md.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from orchestrator.spec.errors import show, validate
from orchestrator.spec.sections import ResourcesSection, Section
from search_spaces.build import Knob
from trainables.registry import Registry

if TYPE_CHECKING:
    from ray.tune.schedulers import TrialScheduler
    from ray.tune.search import Searcher

    from orchestrator.spec.loading import SweepSpec

DEFAULT_TRIALS = 8  # of a searcher that does not fix its own count


@dataclass(frozen=True)
class SpecContext:
    """The rest of a spec, as far as it validated, for a searcher's or scheduler's own checks."""

    searcher: SearcherSection
    scheduler: SchedulerSection
    resources: ResourcesSection | None
    knobs: tuple[Knob, ...]
    train: Mapping[str, Any]
    fixed: Mapping[str, Any] | None  # every trial key no knob sets; None when the model or budget is invalid


class AlgorithmSection(Section, ABC):
    """A searcher's or scheduler's section: its ``name`` and only the settings that algorithm reads."""

    name: str
    # "module:Class" of the ``orchestrator.sweep_hooks.SweepHooks`` this algorithm adds to the sweep path, if any.
    hooks: ClassVar[str | None] = None

    def check(self, context: SpecContext, problems: list[str]) -> None:
        """Add a ``path: message`` line for each way the rest of the spec does not suit this algorithm."""


class SearcherSection(AlgorithmSection):
    """The base of every searcher's settings (``orchestrator.searchers.SEARCHERS``)."""

    choice_knobs_only: ClassVar[bool] = False  # whether every knob must be a choice

    def trial_count(self, requested: int | None, knobs: Sequence[Knob], problems: list[str]) -> int:
        """The trials the sweep runs, given the spec's ``trials`` (None when it has none)."""
        return requested or DEFAULT_TRIALS

    @abstractmethod
    def build(self, spec: SweepSpec) -> Searcher:
        """The Tune searcher, optimising ``val_loss``."""


class SchedulerSection(AlgorithmSection):
    """The base of every scheduler's settings (``orchestrator.schedulers.SCHEDULERS``)."""

    @abstractmethod
    def build(self, spec: SweepSpec, sweep_dir: Path) -> TrialScheduler:
        """The Tune trial scheduler; ``sweep_dir`` holds any state it keeps."""


Settings = TypeVar("Settings", bound=AlgorithmSection)


def parse_settings(registry: Registry[Settings], default: str, raw: Any, problems: list[str]) -> Settings:
    """The member of ``registry`` that ``raw`` names, with its own settings; the default member on any problem.

    ``searcher: tpe`` is short for ``searcher: {name: tpe}``; a missing section is the default member.
    """
    section = registry.kind
    raw = {} if raw is None else {"name": raw} if isinstance(raw, str) else raw
    if not isinstance(raw, Mapping):
        problems.append(f"{section}: must be a mapping, got {show(raw)}")
        return registry.load(default)()
    name = raw.get("name", default)
    if not isinstance(name, str) or name not in registry:
        problems.append(f"{section}.name: {registry.unknown(name)}")
        return registry.load(default)()
    cls = registry.load(name)
    problems += [f"{section}.{key}: not a setting of {name}" for key in raw if key not in cls.model_fields]
    own = {key: value for key, value in raw.items() if key in cls.model_fields}
    return validate(cls, {**own, "name": name}, section, problems) or registry.load(default)()
