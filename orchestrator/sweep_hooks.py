"""What a searcher, a scheduler or another feature adds to the generic sweep path, and which of them a spec turns on.

``run_sweep``, the MLflow callback and the end-of-sweep artifacts name no feature: they call the ``SweepHooks``
that ``active_hooks`` finds for a spec (those its searcher's and scheduler's settings classes name, then any
feature listed here that turns itself on), and each hook adds nothing unless a feature overrides it.
See ``docs/architecture.md``.
"""

from __future__ import annotations

import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from mlflow.tracking import MlflowClient
    from ray.tune import Stopper

    from orchestrator.layout import SweepLayout, SweepRecord
    from orchestrator.results import SweepResults
    from orchestrator.spec import SweepSpec
    from trainables.data.prepare import SweepData

# Hooks of features no searcher or scheduler names: each turns itself on for the specs that need it (``for_spec``).
FEATURE_HOOKS: list[str] = ["orchestrator.cbs.hooks:OutpacedHooks"]


@dataclass(frozen=True)
class TrialMetrics:
    """Metrics for one trial's run at one step, from somewhere other than the trial's own reports."""

    trial_id: str
    step: int
    metrics: dict[str, float]


class MetricFeed(Protocol):
    """A source the MLflow callback drains at every turn of Tune's loop and as each trial ends."""

    def new(self) -> list[TrialMetrics]:
        """What arrived since the last call."""
        ...


# Draws on a trial's loss-curve picture: (its axes, its trial id).
TrialMarks = Callable[["Axes", str], None]


@dataclass(frozen=True)
class SweepEnd:
    """Everything a hook may read or log to once a sweep's trials have ended."""

    results: SweepResults
    spec: SweepSpec
    record: SweepRecord
    layout: SweepLayout
    client: MlflowClient


class SweepHooks:
    """The points where a feature extends the generic sweep path; every default adds nothing.

    Hooks are built once per use from the spec and travel in Tune's experiment snapshot (inside the MLflow
    callback), so they hold only what ``for_spec`` gives them and must pickle.
    """

    @classmethod
    def for_spec(cls, spec: SweepSpec) -> SweepHooks | None:
        """The hooks for ``spec``, or None where the feature is off for it (by default on wherever registered)."""
        return cls()

    def trial_function(self) -> Callable[[dict[str, Any], SweepData], None] | None:
        """A Tune function ``f(config, data)`` each trial runs on one worker instead of training the LM."""
        return None

    def stoppers(self) -> list[Stopper]:
        """Tune stoppers for the sweep's trials."""
        return []

    def metric_feeds(self, sweep_dir: Path) -> list[MetricFeed]:
        """Metrics logged to the trials' runs besides what the trials report."""
        return []

    def trial_marks(self, end: SweepEnd) -> TrialMarks | None:
        """What to draw on each trial's loss curves (``loss_curves.png`` on its run)."""
        return None

    def sweep_artifacts(self, end: SweepEnd) -> list[Path]:
        """Reports on the parent run (metrics, tags) and the files to log on it."""
        return []


def active_hooks(spec: SweepSpec) -> list[SweepHooks]:
    """The hooks of the spec's searcher, of its scheduler and of every feature that is on for it, in that order."""
    # A searcher's or scheduler's settings class names its hooks (``hooks``); features are listed here.
    targets = [type(spec.searcher).hooks, type(spec.scheduler).hooks, *FEATURE_HOOKS]
    built = (pkgutil.resolve_name(target).for_spec(spec) for target in targets if target is not None)
    return [hooks for hooks in built if hooks is not None]
