"""The ``grid`` searcher: each point of the spec's conditional grid once, in order. See docs/spec.md."""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from ray.tune.search import Searcher

from orchestrator.searchers import METRIC, MODE
from orchestrator.spec import SearcherSection
from search_spaces.build import Knob, grid_points

if TYPE_CHECKING:
    from orchestrator.spec import SweepSpec


class GridSearcher(Searcher):
    """Suggests a fixed list of points, each once, in order.

    Tune's ``grid_search`` takes the full product of every knob's values, so a
    conditional knob would multiply the points where it is inactive; here the
    points come from the spec's conditional structure (``grid_points``).

    Example:
        >>> searcher = GridSearcher([{"batch_size": 8}, {"batch_size": 16}], metric="val_loss", mode="min")
        >>> searcher.suggest("t1"), searcher.suggest("t2"), searcher.suggest("t3")
        ({'batch_size': 8}, {'batch_size': 16}, 'FINISHED')
    """

    def __init__(self, points: Sequence[Mapping[str, Any]], metric: str | None = None, mode: str | None = None) -> None:
        if not points:
            raise ValueError("GridSearcher needs at least one point")
        super().__init__(metric=metric, mode=mode)
        self._points = [dict(p) for p in points]
        self._next = 0

    def suggest(self, trial_id: str) -> dict[str, Any] | str:
        if self._next >= len(self._points):
            return Searcher.FINISHED
        self._next += 1
        return dict(self._points[self._next - 1])

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """Nothing to learn: the grid is fixed."""

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as file:
            pickle.dump({"points": self._points, "next": self._next}, file)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as file:
            state = pickle.load(file)
        self._points, self._next = state["points"], state["next"]


class GridSettings(SearcherSection):
    """``searcher: grid``: no settings; the sweep runs every point of the grid once."""

    name: Literal["grid"] = "grid"
    choice_knobs_only: ClassVar[bool] = True

    def trial_count(self, requested: int | None, knobs: Sequence[Knob], problems: list[str]) -> int:
        size = len(grid_points(knobs)) if knobs else 0
        if requested is not None and requested != size:
            problems.append(
                f"trials: the grid searcher runs each of its {size} points once; drop trials or set it to {size}"
            )
        return size

    def build(self, spec: SweepSpec) -> GridSearcher:
        return GridSearcher(grid_points(spec.knobs), metric=METRIC, mode=MODE)
