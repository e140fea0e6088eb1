"""The searchers a spec can name: ``SEARCHERS`` maps each name to its settings class, imported only when a spec
names it, which validates the ``searcher`` section and builds the Tune searcher. See docs/spec.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.spec.settings import SearcherSection
from trainables.registry import Registry

if TYPE_CHECKING:
    from ray.tune.search import Searcher

    from orchestrator.spec import SweepSpec

__all__ = ["DEFAULT_SEARCHER", "METRIC", "MODE", "SEARCHERS", "build_searcher"]

METRIC, MODE = "val_loss", "min"

SEARCHERS: Registry[SearcherSection] = Registry(
    "searcher",
    SearcherSection,
    {
        "random": "orchestrator.searchers.optuna_search:RandomSettings",
        "grid": "orchestrator.searchers.grid:GridSettings",
        "tpe": "orchestrator.searchers.optuna_search:TPESettings",
        "hypergrad": "orchestrator.hypergrad.settings:HypergradSettings",
    },
)
DEFAULT_SEARCHER = "random"


def build_searcher(spec: SweepSpec) -> Searcher:
    """The spec's searcher, optimising ``val_loss`` (the last one a trial reports)."""
    return spec.searcher.build(spec)
