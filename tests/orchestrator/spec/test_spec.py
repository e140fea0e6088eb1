"""The sweep spec: good specs load; every problem in a bad one is named by its YAML path."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import pytest
from ray.tune.search import Searcher

from orchestrator.cli.main import main
from orchestrator.schedulers import SCHEDULERS
from orchestrator.searchers import SEARCHERS, build_searcher
from orchestrator.searchers.grid import GridSearcher
from orchestrator.spec import SearcherSection, SpecContext, SpecError, SweepSpec, load_spec, parse_spec
from orchestrator.spec.train_keys import TRAIN_KEYS
from search_spaces.build import Knob
from tests.conftest import REPO, tiny_spec, write_spec
from trainables.registry import Registry

SHIPPED = sorted((REPO / "search_spaces").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_specs_are_valid(path: Path) -> None:
    spec = load_spec(path)
    assert spec.knobs and spec.trials >= 1


def test_spaces_command_lists_every_ready_spec(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["spaces"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(SHIPPED)
    joint = next(line for line in lines if "joint.yaml" in line)
    assert "(24 trials, 11 knobs): The joint space" in joint


def test_tiny_spec_resolves_defaults_and_knobs() -> None:
    spec = parse_spec(tiny_spec())
    assert [k.name for k in spec.knobs] == ["schedule.name", "peak_lr", "batch_size", "schedule.decay_frac"]
    assert spec.knobs[3].when == {"schedule.name": ("wsd",)}
    fixed = spec.fixed_config()
    assert fixed["model.seq_len"] == 64 and fixed["budget.compute"] == 40960
    assert fixed["eval_every"] == 20 and fixed["optimizer.name"] == "adamw"
    assert not {k.name for k in spec.knobs} & set(fixed)
    assert spec.output_dir == Path("sweeps") / "tiny"


def test_selection_plan_covers_what_trials_can_draw() -> None:
    search = {
        "selection.strategy": {"choice": ["full", "random", "uniform"]},
        "selection.fraction": {"uniform": [0.1, 0.6], "when": {"selection.strategy": ["random", "uniform"]}},
    }
    plan = parse_spec(tiny_spec(search=search)).selection_plan()
    assert plan.strategies == ("random", "uniform") and plan.max_fraction == 0.6
    assert parse_spec(tiny_spec()).selection_plan().strategies == ()  # full only: no embedding work


def test_yaml_reads_exponents_without_a_dot() -> None:
    # YAML 1.1 reads 3e-4 as a string; the spec must still take it as a number.
    spec = parse_spec(tiny_spec(search={"peak_lr": {"loguniform": ["3e-4", "1e-2"]}}))
    assert spec.knobs[0].low == pytest.approx(3e-4)


def test_spec_hash_follows_settings_not_formatting() -> None:
    a, b = parse_spec(tiny_spec(), "# one"), parse_spec(tiny_spec(), "# two")
    assert a.spec_hash() == b.spec_hash()
    assert parse_spec(tiny_spec(trials=5)).spec_hash() != a.spec_hash()


def test_summary_holds_only_the_settings_of_the_chosen_searcher_and_scheduler() -> None:
    summary = parse_spec(tiny_spec(searcher={"name": "tpe", "seed": 3}, scheduler="asha")).summary()
    assert {k: v for k, v in summary.items() if k.startswith(("searcher.", "scheduler."))} == {
        "searcher.name": "tpe", "searcher.seed": 3, "searcher.n_startup_trials": None,
        "scheduler.name": "asha", "scheduler.grace_fraction": 0.25, "scheduler.reduction_factor": 3.0,
    }  # fmt: skip


def test_spec_hash_follows_the_settings_of_the_chosen_algorithms() -> None:
    asha = {"name": "asha", "grace_fraction": 0.2}
    base = parse_spec(tiny_spec(scheduler=asha)).spec_hash()
    assert parse_spec(tiny_spec(scheduler={**asha, "reduction_factor": 3.0})).spec_hash() == base  # the default
    assert parse_spec(tiny_spec(scheduler={**asha, "grace_fraction": 0.3})).spec_hash() != base
    assert parse_spec(tiny_spec(scheduler="mpl")).spec_hash() != base
    random = parse_spec(tiny_spec(searcher={"name": "random"})).spec_hash()
    assert random == parse_spec(tiny_spec(searcher="random")).spec_hash()
    assert random != parse_spec(tiny_spec(searcher={"name": "random", "seed": 1})).spec_hash()


@pytest.mark.parametrize("registry", [SEARCHERS, SCHEDULERS], ids=["searchers", "schedulers"])
def test_every_registered_algorithm_reads_its_own_section(registry: Registry) -> None:
    for name in registry:
        settings = registry.load(name)
        assert issubclass(settings, registry.base) and settings().name == name
        assert settings.model_fields["name"].annotation == Literal[name]


STRAYS = {
    "scheduler": ({"name": "mpl", "grace_fraction": 0.5}, "scheduler.grace_fraction: not a setting of mpl"),
    "default scheduler": ({"margin": 0.1}, "scheduler.margin: not a setting of fifo"),
    "searcher": ({"name": "random", "n_startup_trials": 4}, "searcher.n_startup_trials: not a setting of random"),
    "grid": ({"name": "grid", "seed": 1}, "searcher.seed: not a setting of grid"),
}


@pytest.mark.parametrize("section_value, expected", STRAYS.values(), ids=STRAYS.keys())
def test_a_setting_the_chosen_algorithm_does_not_read_is_an_error(section_value: dict, expected: str) -> None:
    section = expected.split(".")[0]
    with pytest.raises(SpecError) as caught:
        parse_spec(tiny_spec(**{section: section_value}))
    assert caught.value.problems[0] == expected


@pytest.mark.parametrize(
    "section, value, expected",
    [
        ("searcher", "bayes", "searcher.name: unknown searcher 'bayes'; known: random, grid, tpe, hypergrad"),
        ("scheduler", {"name": "pbt"}, "scheduler.name: unknown scheduler 'pbt'; known: fifo, asha, mpl"),
        ("scheduler", {"name": 3}, "scheduler.name: unknown scheduler 3; known: fifo, asha, mpl"),
        ("scheduler", ["asha"], "scheduler: must be a mapping, got ['asha']"),
    ],
)
def test_an_unknown_algorithm_lists_the_known_ones(section: str, value: Any, expected: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(tiny_spec(**{section: value}))
    assert caught.value.problems == [expected]


class FirstValuesSettings(SearcherSection):
    """A searcher from outside effsweep: one trial at every knob's first choice."""

    name: Literal["first_values"] = "first_values"
    repeats: int = 1

    def trial_count(self, requested: int | None, knobs: Sequence[Knob], problems: list[str]) -> int:
        return self.repeats

    def check(self, context: SpecContext, problems: list[str]) -> None:
        problems += [f"search.{k.name}: first_values takes choices" for k in context.knobs if k.kind != "choice"]

    def build(self, spec: SweepSpec) -> Searcher:
        return GridSearcher([{k.name: k.values[0] for k in spec.knobs}] * self.repeats)


@pytest.fixture
def first_values(monkeypatch: pytest.MonkeyPatch) -> None:
    # A registry never forgets a name; this one is forgotten with the test's copy of the registrations.
    monkeypatch.setattr(SEARCHERS, "_implementations", dict(SEARCHERS._implementations))
    SEARCHERS.register("first_values", f"{__name__}:FirstValuesSettings")


@pytest.mark.usefixtures("first_values")
def test_a_searcher_registered_elsewhere_reads_and_checks_its_section() -> None:
    search = {"batch_size": {"choice": [8, 16]}}
    spec = parse_spec(tiny_spec(searcher={"name": "first_values", "repeats": 2}, search=search, trials=None))
    assert isinstance(spec.searcher, FirstValuesSettings) and spec.trials == 2
    assert spec.summary()["searcher.repeats"] == 2
    assert build_searcher(spec).suggest("t1") == {"batch_size": 8}
    with pytest.raises(SpecError) as caught:
        parse_spec(tiny_spec(searcher={"name": "first_values", "seed": 0}))
    assert caught.value.problems == [
        "searcher.seed: not a setting of first_values",
        "search.peak_lr: first_values takes choices",
        "search.schedule.decay_frac: first_values takes choices",
    ]


def _half_rate(value: Any) -> dict[str, float]:
    if not isinstance(value, float):
        raise ValueError(f"must be a rate, got {value!r}")
    return {"peak_lr": value / 2}


def test_a_train_key_is_read_into_the_trial_keys_it_stands_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(TRAIN_KEYS, "double_rate", f"{__name__}:_half_rate")
    search = {"batch_size": {"choice": [8, 16]}}
    assert parse_spec(tiny_spec(train={"double_rate": 0.02}, search=search)).fixed_config()["peak_lr"] == 0.01
    with pytest.raises(SpecError) as caught:
        parse_spec(tiny_spec(train={"double_rate": "fast"}, search=search))
    assert caught.value.problems == ["train.double_rate: must be a rate, got 'fast'"]


def _with(section: str, value: Any) -> dict[str, Any]:
    return tiny_spec(**{section: value})


def _search(**knobs: Any) -> dict[str, Any]:
    return tiny_spec(search=knobs)


BAD_SPECS = {
    "range backwards": (_search(peak_lr={"uniform": [1e-2, 1e-3]}), "search.peak_lr: low must be below high"),
    "log of zero": (_search(peak_lr={"loguniform": [0, 1e-2]}), "search.peak_lr: low must be above 0"),
    "unknown knob": (_search(learning_rate={"choice": [1]}), "search.learning_rate: unknown trial setting"),
    "sweep-level knob": (
        _search(**{"model.d_model": {"choice": [64, 128]}}),
        "search.model.d_model: fixed for the whole sweep",
    ),
    "bad category": (
        _search(**{"schedule.name": {"choice": ["cosine", "linear"]}}),
        "search.schedule.name.choice: 'linear' is not one of",
    ),
    "when on unknown knob": (
        _search(**{"schedule.decay_frac": {"uniform": [0.1, 0.2], "when": {"schedule.name": "wsd"}}}),
        "search.schedule.decay_frac.when.schedule.name: must name a choice knob listed earlier",
    ),
    "two distributions": (_search(peak_lr={"uniform": [0.1, 0.2], "choice": [1]}), "give exactly one distribution"),
    "real range on int": (_search(batch_size={"uniform": [8, 16]}), "search.batch_size: takes integers"),
    "value outside field": (
        _search(batch_size={"choice": [0, 8]}),
        "search.batch_size: Input should be greater than or equal to 1 (got 0)",
    ),
    "val fraction": (
        _with("data", {"corpus": "gensim:lee_background", "val_fraction": 0.9}),
        "data.val_fraction: Input should be less than or equal to 0.5",
    ),
    "missing corpus file": (_with("data", {"corpus": "no/such/corpus.txt"}), "data.corpus: no such file"),
    "unknown bundled corpus": (_with("data", {"corpus": "gensim:nope"}), "data.corpus: gensim:nope: no such bundled"),
    "missing budget": (tiny_spec(budget=None), "budget: required section is missing"),
    "self-rated rule on two workers": (
        tiny_spec(resources={"workers": 2}, search={"optimizer.name": {"choice": ["adamw", "vsgd"]}}),
        "search.optimizer.name: vsgd steps on the batch's own rows, so it runs on one worker, not 2",
    ),
    "batch not divisible among workers": (
        tiny_spec(resources={"workers": 3}),
        "search.batch_size: batch size 8 does not divide among resources.workers (3)",
    ),
    "negative budget": (_with("budget", {"compute": -5}), "budget.compute: Input should be greater than 0"),
    "heads do not divide": (_with("model", {"size": "tiny", "n_head": 3}), "model: d_model (64) must be divisible"),
    "grid over a range": (_with("searcher", "grid"), "search.peak_lr: the grid searcher takes only choice knobs"),
    "unknown top-level field": (tiny_spec(epochs=3), "epochs: unknown field"),
    "bad fixed value": (_with("train", {"peak_lr": -1}), "train.peak_lr: Input should be greater than 0"),
    "knob fixed twice": (_with("train", {"batch_size": 8}), "search.batch_size: also fixed under train.batch_size"),
    "too few steps": (
        _with("budget", {"compute": 6000}),
        "search: the combination schedule.name='cosine', peak_lr=0.001, batch_size=16",
    ),
    "wsd phases overflow": (
        _search(
            **{"schedule.name": {"choice": ["wsd"]}, "schedule.warmup_frac": {"uniform": [0.0, 0.9]}},
            **{"schedule.decay_frac": {"uniform": [0.1, 0.5]}},
        ),
        "must not exceed 1",
    ),
    "full with a fraction": (
        _search(**{"selection.strategy": {"choice": ["full", "uniform"]}, "selection.fraction": {"choice": [0.5]}}),
        "fraction must be 1 with strategy full (got 0.5)",
    ),
    "empty selection": (
        _search(**{"selection.fraction": {"uniform": [0.0, 0.5]}}),
        "search.selection.fraction: Input should be greater than 0 (got 0.0)",
    ),
    "bad embedding": (
        _with("data", {"corpus": "gensim:lee_background", "embedding": {"vector_size": 1}}),
        "data.embedding.vector_size: Input should be greater than or equal to 2",
    ),
    "missing vectors": (
        _with("data", {"corpus": "gensim:lee_background", "embedding": {"pretrained": "no/vectors.kv"}}),
        "data.embedding.pretrained: no such file: no/vectors.kv",
    ),
    "patch lambda without patches": (
        _search(**{"patch.K": {"choice": [1, 4]}, "patch.lambda": {"choice": [0.5]}}),
        "lambda must be 0 when K is 1 (token-level training), got 0.5",
    ),
    "patches without lambda": (
        _with("train", {"patch.K": 4}),
        "lambda must be above 0 when K is 4",
    ),
    "patch size zero": (_search(**{"patch.K": {"choice": [0, 2]}}), "search.patch.K: Input should be greater than"),
    "lambda of one": (
        _search(**{"patch.K": {"choice": [2]}, "patch.lambda": {"uniform": [0.5, 1.0]}}),
        "search.patch.lambda: Input should be less than 1 (got 1.0)",
    ),
    "schedule parameter out of range": (
        _search(**{"schedule.name": {"choice": ["inverse_power"]}, "schedule.decay_exponent": {"uniform": [0.5, 1.5]}}),
        "search.schedule.decay_exponent: Input should be less than or equal to 1 (got 1.5)",
    ),
    "rule that sets its own rate with a schedule": (
        _search(**{"optimizer.name": {"choice": ["adamw", "vsgd"]}, "schedule.name": {"choice": ["cosine"]}}),
        "optimizer.name vsgd sets or shapes its own rate; schedule.name must be constant (got cosine)",
    ),
    "unknown optimizer": (
        _search(**{"optimizer.name": {"choice": ["adam", "lion"]}}),
        "search.optimizer.name.choice: 'adam' is not one of adamw, sgd, schedule_free_adamw",
    ),
    "asha grace": (_with("scheduler", {"name": "asha", "grace_fraction": 1.5}), "scheduler.grace_fraction"),
    "zero concurrency": (tiny_spec(concurrency=0), "concurrency: must be 'auto' or at least 1"),
}


@pytest.mark.parametrize("raw, expected", BAD_SPECS.values(), ids=BAD_SPECS.keys())
def test_bad_spec_names_the_field(raw: dict[str, Any], expected: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(raw)
    assert any(expected in line for line in caught.value.problems), caught.value.problems


def test_every_problem_is_reported_at_once() -> None:
    raw = tiny_spec(
        name="bad name",
        data={"corpus": "gensim:lee_background", "val_fraction": 2},
        search={"peak_lr": {"uniform": [1, 0.1]}, "nope": {"choice": [1]}},
    )
    with pytest.raises(SpecError) as caught:
        parse_spec(raw)
    paths = [line.split(":")[0] for line in caught.value.problems]
    assert paths == ["name", "data.val_fraction", "search.peak_lr", "search.nope"]


def test_unreadable_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nsearch:\n  peak_lr: {uniform: [1, 2]\n")
    with pytest.raises(SpecError, match=r"broken.yaml: not valid YAML at line \d+"):
        load_spec(path)


def test_cli_exits_2_lists_problems_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(tmp_path / "bad.yaml", _search(peak_lr={"uniform": [1e-2, 1e-3]}, batch_size={"choice": [0]}))
    out = tmp_path / "out"
    assert main(["run", str(spec), "--output", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        "search.peak_lr: low must be below high (got 0.01 and 0.001)",
        "search.batch_size: Input should be greater than or equal to 1 (got 0)",
    ]
    assert not out.exists()


def test_a_fixed_setting_of_some_searched_schedule_families_applies_to_those_that_read_it() -> None:
    searched = {"schedule.name": {"choice": ["cosine", "two_step"]}}
    spec = parse_spec(tiny_spec(train={"schedule.step_frac": 0.3, "schedule.warmup_frac": 0.1}, search=searched))
    assert spec.train["schedule.warmup_frac"] == 0.1  # both families read it
    [step_frac] = [knob for knob in spec.knobs if knob.name == "schedule.step_frac"]
    assert step_frac.values == (0.3,) and dict(step_frac.when) == {"schedule.name": ("two_step",)}
    with pytest.raises(SpecError) as caught:
        parse_spec(tiny_spec(train={"schedule.power_a": 2.0}, search=searched))
    assert caught.value.problems == ["train.schedule.power_a: not a setting of cosine, two_step"]
