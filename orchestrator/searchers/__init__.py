"""The searchers a spec can name: ``random`` and ``tpe`` through Optuna, ``grid`` over explicit points,
``hypergrad`` (``orchestrator.hypergrad.searcher``) on exact hypergradients."""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import optuna
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from orchestrator.hypergrad.searcher import CHAINS_FILE, HypergradSearcher
from orchestrator.spec import SweepSpec
from search_spaces.build import DefineByRunSpace, grid_points
from trainables.hypergrad.hyperparameters import Hyperparameters
from trainables.hypergrad.tasks import lm_group_names

METRIC, MODE = "val_loss", "min"


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


def build_searcher(spec: SweepSpec) -> Searcher:
    """The spec's searcher, optimising ``val_loss`` (the last one a trial reports)."""
    if spec.searcher.name == "grid":
        return GridSearcher(grid_points(spec.knobs), metric=METRIC, mode=MODE)
    if spec.searcher.name == "hypergrad":
        return _hypergrad_searcher(spec)
    if spec.searcher.name == "random":
        sampler: optuna.samplers.BaseSampler = optuna.samplers.RandomSampler(seed=spec.searcher.seed)
    else:
        startup = spec.searcher.n_startup_trials or min(10, max(2, spec.trials // 3))
        with warnings.catch_warnings():
            # multivariate/group TPE is marked experimental, and is what conditional spaces need.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(
                seed=spec.searcher.seed, n_startup_trials=startup, multivariate=True, group=True
            )
    return OptunaSearch(space=DefineByRunSpace(spec.knobs), metric=METRIC, mode=MODE, sampler=sampler)


def _hypergrad_searcher(spec: SweepSpec) -> HypergradSearcher:
    """Chains over a shuffled cycle of the spec's knob combinations, each with its own seed."""
    section = spec.searcher
    initial = Hyperparameters.initial(
        blocks=section.blocks, groups=len(lm_group_names(spec.model)), lr=section.init_lr,
        momentum=section.init_momentum, weight_decay=section.init_weight_decay,
    )  # fmt: skip
    points = grid_points(spec.knobs) if spec.knobs else [{}]
    order = np.random.default_rng(section.seed).permutation(len(points))
    chains = [{**points[order[i % len(points)]], "seed": section.seed + i} for i in range(section.chains)]
    return HypergradSearcher(
        initial, chains, meta_steps=section.meta_steps, meta_lr=section.meta_lr, patience=section.patience,
        growth=section.growth, record=spec.output_dir.resolve() / CHAINS_FILE,
        metric=METRIC, mode=MODE,
    )  # fmt: skip
