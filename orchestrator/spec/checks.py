"""The space checked against the trial's own schema: each value alone, then the extreme combinations.

See docs/spec.md.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from pydantic import ValidationError

from orchestrator.spec.errors import message, show
from search_spaces.build import Knob, combinations
from trainables.config import SWEEP_LEVEL_SECTIONS, BudgetConfig, OptimizerConfig, TrialConfig, flatten, trial_fields
from trainables.model import ModelConfig
from trainables.step_rules import step_rule_class

# Corner combinations checked at most; the first ones in spec order are taken.
MAX_COMBINATIONS_CHECKED = 20_000
MAX_COMBINATION_PROBLEMS = 5


def fixed_config(
    model: ModelConfig, budget: BudgetConfig, train: Mapping[str, Any], searched: set[str]
) -> dict[str, Any]:
    """Every trial key not in ``searched``, with its value: the default, the model's and budget's, or ``train``'s.

    A section with several members (``schedule``) takes the defaults of the member its ``name`` picks: where the
    spec sets or searches that name, the trial fills them in, and none is fixed here.
    """
    defaults = flatten(TrialConfig.model_construct(budget=budget).model_dump(by_alias=True))
    picked = {key.removesuffix(".name") for key in (*train, *searched) if key.endswith(".name")}
    members = tuple(f"{s}." for s in picked if any(k.startswith(f"{s}.") and k not in defaults for k in trial_fields()))
    flat = {k: v for k, v in defaults.items() if not k.startswith(members)} | flatten({"model": asdict(model)})
    return {key: value for key, value in (flat | dict(train)).items() if key not in searched}


def fixed_path(key: str) -> str:
    """Where a spec fixes a trial key: its sweep-level section, or ``train``."""
    return key if key.split(".")[0] in SWEEP_LEVEL_SECTIONS else f"train.{key}"


def only_choices(knobs: Sequence[Knob], searcher: str, problems: list[str]) -> None:
    """For a searcher that walks a grid: every knob must list its values."""
    for knob in knobs:
        if knob.kind != "choice":
            problems.append(f"search.{knob.name}: the {searcher} searcher takes only choice knobs (got {knob.kind})")


def check_knob_values(knobs: Sequence[Knob], fixed: Mapping[str, Any], problems: list[str]) -> None:
    """Every fixed value, and every knob's extremes at a point where the knob is active, as a trial takes them."""
    for key, text in _trial_problems(fixed):
        if key in fixed:  # a fixed leaf value; knob keys are not in fixed
            problems.append(f"{fixed_path(key)}: {text}")
    for index, knob in enumerate(knobs):
        point = {**fixed, **_first_point(knob, knobs[:index])}
        for value in knob.extremes():
            for key, text in _trial_problems({**point, knob.name: value}):
                if key == knob.name:
                    problems.append(f"search.{knob.name}: {text}")


def _first_point(knob: Knob, earlier: Sequence[Knob]) -> dict[str, Any]:
    """Earlier knobs' values where ``knob`` is active: its conditions' first values, else each knob's first."""
    needed = _conditions(knob, {k.name: k for k in earlier})
    point: dict[str, Any] = {}
    for other in earlier:
        if other.active(point):
            point[other.name] = needed.get(other.name, other.extremes()[0])
    return point


def _conditions(knob: Knob, earlier: Mapping[str, Knob]) -> dict[str, Any]:
    """The first value of each knob ``knob`` is conditional on, and of each one those are conditional on."""
    point: dict[str, Any] = {}
    for name, allowed in knob.when.items():
        point |= _conditions(earlier[name], earlier)
        point[name] = allowed[0]
    return point


def check_workers(workers: int, knobs: Sequence[Knob], fixed: Mapping[str, Any], problems: list[str]) -> None:
    """Every trial must split its batch evenly, and use a rule whose step does not depend on the worker's rows."""
    possible = {k.name: (k.extremes(), f"search.{k.name}") for k in knobs}
    defaults = {"optimizer.name": OptimizerConfig().name, "batch_size": TrialConfig.model_fields["batch_size"].default}
    values_of = {**defaults, **fixed}
    for key in ("optimizer.name", "batch_size"):
        possible.setdefault(key, ((values_of[key],), fixed_path(key)))
    values, where = possible["optimizer.name"]
    rules = set(values) & set(trial_fields()["optimizer.name"].choices)  # an unknown one is reported elsewhere
    for rule in sorted(r for r in rules if step_rule_class(r).single_worker_only):
        problems.append(f"{where}: {rule} steps on the batch's own rows, so it runs on one worker, not {workers}")
    values, where = possible["batch_size"]
    for size in values:
        if int(size) % workers:
            problems.append(f"{where}: batch size {size} does not divide among resources.workers ({workers})")


def check_combinations(knobs: Sequence[Knob], fixed: Mapping[str, Any], problems: list[str]) -> None:
    """Reject a space whose extreme combinations a trial would refuse (e.g. too few steps)."""
    seen: set[str] = set()
    bad = 0
    for point in itertools.islice(combinations(knobs, Knob.extremes), MAX_COMBINATIONS_CHECKED):
        for key, text in _trial_problems({**fixed, **point}):
            if text in seen:
                continue
            seen.add(text)
            bad += 1
            if bad > MAX_COMBINATION_PROBLEMS:
                continue
            where = f" ({key})" if key else ""
            values = ", ".join(f"{k}={show(v)}" for k, v in point.items())
            problems.append(f"search: the combination {values} is invalid{where}: {text}")
    if bad > MAX_COMBINATION_PROBLEMS:
        problems.append(f"search: {bad - MAX_COMBINATION_PROBLEMS} more invalid combinations not shown")


def _trial_problems(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(flat key, message) for every reason ``TrialConfig`` rejects ``config``."""
    try:
        TrialConfig.from_flat(config)
    except ValidationError as exc:
        return [(".".join(str(p) for p in e["loc"]), message(e)) for e in exc.errors()]
    return []
