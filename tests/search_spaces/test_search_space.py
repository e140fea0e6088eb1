"""Search spaces: conditional knobs, the grid, and the grid searcher's checkpoint."""

from __future__ import annotations

import pickle
from pathlib import Path

import optuna
import pytest
from hypothesis import given
from hypothesis import strategies as st
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from orchestrator.schedulers import build_scheduler
from orchestrator.searchers import build_searcher
from orchestrator.searchers.grid import GridSearcher
from orchestrator.spec import parse_spec
from search_spaces.build import DefineByRunSpace, Knob, grid_points
from tests.conftest import tiny_spec

SCHEDULE = Knob("schedule.name", "choice", values=("cosine", "wsd", "constant"))
DECAY = Knob("schedule.decay_frac", "choice", values=(0.1, 0.3), when={"schedule.name": ("wsd",)})
SHAPE = Knob("schedule.decay_shape", "choice", values=("linear", "cosine"), when={"schedule.name": ("wsd",)})
LR = Knob("peak_lr", "choice", values=(1e-3, 1e-2))


def test_grid_leaves_inactive_knobs_out() -> None:
    points = grid_points([SCHEDULE, DECAY, SHAPE, LR])
    # cosine and constant: 2 rates each; wsd: 2 fractions x 2 shapes x 2 rates.
    assert len(points) == 2 * 2 + 8
    for point in points:
        assert ("schedule.decay_frac" in point) == (point["schedule.name"] == "wsd")
    assert len({tuple(sorted(p.items())) for p in points}) == len(points)


def test_define_by_run_samples_conditional_knobs_only_when_active() -> None:
    space = DefineByRunSpace([SCHEDULE, Knob("schedule.decay_frac", "uniform", low=0.1, high=0.4, when=DECAY.when)])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(40):
        trial = study.ask()
        space(trial)
        name = trial.params["schedule.name"]
        seen.add(name)
        assert ("schedule.decay_frac" in trial.params) == (name == "wsd")
        if name == "wsd":
            assert 0.1 <= trial.params["schedule.decay_frac"] <= 0.4
        study.tell(trial, 1.0)
    assert seen == {"cosine", "wsd", "constant"}


def test_define_by_run_space_survives_pickling() -> None:
    space = pickle.loads(pickle.dumps(DefineByRunSpace([SCHEDULE, DECAY])))
    assert [k.name for k in space.knobs] == ["schedule.name", "schedule.decay_frac"]


@given(st.lists(st.sampled_from([1, 2, 4, 8]), min_size=1, max_size=4, unique=True))
def test_int_knob_on_log_scale_stays_in_range(values: list[int]) -> None:
    knob = Knob("batch_size", "int", low=min(values), high=max(values) + 1, log=True)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    trial = study.ask()
    DefineByRunSpace([knob])(trial)
    assert min(values) <= trial.params["batch_size"] <= max(values) + 1


def test_grid_searcher_suggests_each_point_once_and_resumes(tmp_path: Path) -> None:
    points = grid_points([SCHEDULE, DECAY])
    searcher = GridSearcher(points, metric="val_loss", mode="min")
    first = [searcher.suggest(f"t{i}") for i in range(2)]
    searcher.save(str(tmp_path / "grid.pkl"))
    resumed = GridSearcher([{"x": 0}])
    resumed.restore(str(tmp_path / "grid.pkl"))
    rest = [resumed.suggest(f"t{i}") for i in range(2, len(points))]
    assert first + rest == points
    assert resumed.suggest("last") == GridSearcher.FINISHED
    with pytest.raises(ValueError, match="at least one point"):
        GridSearcher([])


@pytest.mark.parametrize("name", ["random", "tpe", "grid"])
def test_each_searcher_is_built_from_a_spec(name: str) -> None:
    search = {"schedule.name": {"choice": ["cosine", "wsd"]}, "batch_size": {"choice": [8, 16]}}
    seed = {} if name == "grid" else {"seed": 1}  # the grid draws nothing
    spec = parse_spec(tiny_spec(searcher={"name": name, **seed}, search=search, trials=None))
    searcher = build_searcher(spec)
    assert searcher.metric == "val_loss" and searcher.mode == "min"
    if name == "grid":
        assert spec.trials == 4


def test_fifo_and_asha_are_built_from_a_spec(tmp_path: Path) -> None:
    fifo = parse_spec(tiny_spec(scheduler="fifo"))
    assert type(build_scheduler(fifo, tmp_path)) is FIFOScheduler
    asha = parse_spec(tiny_spec(scheduler={"name": "asha", "grace_fraction": 0.5, "reduction_factor": 2}))
    built = build_scheduler(asha, tmp_path)
    assert isinstance(built, ASHAScheduler) and built._time_attr == "compute"
    assert built._max_t == 40960 and built._reduction_factor == 2
