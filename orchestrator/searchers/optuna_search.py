"""The ``random`` and ``tpe`` searchers: Optuna samplers over the spec's define-by-run space. See docs/spec.md."""

from __future__ import annotations

import warnings
from abc import abstractmethod
from typing import TYPE_CHECKING, Literal

import optuna
from pydantic import Field
from ray.tune.search.optuna import OptunaSearch

from orchestrator.searchers import METRIC, MODE
from orchestrator.spec import SearcherSection
from search_spaces.build import DefineByRunSpace

if TYPE_CHECKING:
    from orchestrator.spec import SweepSpec


class _OptunaSettings(SearcherSection):
    seed: int = Field(0, ge=0)

    @abstractmethod
    def sampler(self, spec: SweepSpec) -> optuna.samplers.BaseSampler:
        """The Optuna sampler that draws each trial's knob values."""

    def build(self, spec: SweepSpec) -> OptunaSearch:
        return OptunaSearch(space=DefineByRunSpace(spec.knobs), metric=METRIC, mode=MODE, sampler=self.sampler(spec))


class RandomSettings(_OptunaSettings):
    """``searcher: random``: independent uniform draws."""

    name: Literal["random"] = "random"

    def sampler(self, spec: SweepSpec) -> optuna.samplers.BaseSampler:
        return optuna.samplers.RandomSampler(seed=self.seed)


class TPESettings(_OptunaSettings):
    """``searcher: tpe``: multivariate, grouped TPE after random startup trials."""

    name: Literal["tpe"] = "tpe"
    n_startup_trials: int | None = Field(None, ge=1, description="random trials before TPE takes over")

    def sampler(self, spec: SweepSpec) -> optuna.samplers.BaseSampler:
        startup = self.n_startup_trials or min(10, max(2, spec.trials // 3))
        with warnings.catch_warnings():
            # multivariate/group TPE is marked experimental, and is what conditional spaces need.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=self.seed, n_startup_trials=startup, multivariate=True, group=True)
