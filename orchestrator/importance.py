"""Which knobs mattered: each knob's fANOVA importance for ``final_val_loss`` over a sweep's completed trials.

Optuna's fANOVA evaluator fits a random forest to the trials and splits the variance of the objective
among the knobs; each trial's knobs get the distributions the searchers drew them from
(``search_spaces.build.DefineByRunSpace``). fANOVA needs the same knobs in every trial, so a
conditional knob that some completed trial left inactive is not scored: what it changes shows, in
part, in the importance of the knob that switches it on. With fewer than two completed trials, no
knob that varies among them, or one objective value for all, there is nothing to share out and the
table is empty. ``DIR/results/importances.csv`` holds the table; ``effsweep results`` prints it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import optuna
import pandas as pd
from optuna.importance import FanovaImportanceEvaluator
from optuna.trial import FixedTrial, FrozenTrial, create_trial

from orchestrator.results import CONFIG_PREFIX
from search_spaces.build import DefineByRunSpace, Knob
from trainables.loop import OBJECTIVE

IMPORTANCES_FILE = "importances.csv"
COLUMNS = ("knob", "importance")
MIN_TRIALS = 2


def knob_importances(trials: pd.DataFrame, knobs: Sequence[Knob]) -> pd.DataFrame:
    """(knob, importance) for the varying knobs every completed trial has, most important first.

    A knob's importance is the share of the objective's variance it explains alone; what knobs explain
    only together is no knob's, so the shares sum to 1 or less.
    """
    done = trials[trials["status"] == "completed"]
    frozen = [_as_optuna_trial(row, knobs) for _, row in done.iterrows()]
    scored = _varying_knobs(frozen, knobs) if len(frozen) >= MIN_TRIALS else []
    if not scored or done[OBJECTIVE].nunique() < 2:
        return pd.DataFrame(columns=list(COLUMNS))
    with _quiet_optuna():
        study = optuna.create_study(direction="minimize")
    study.add_trials(frozen)
    scores = FanovaImportanceEvaluator(seed=0).evaluate(study, params=scored)
    table = pd.DataFrame({"knob": list(scores), "importance": [float(v) for v in scores.values()]})
    return table.sort_values("importance", ascending=False, ignore_index=True)


def _as_optuna_trial(row: pd.Series, knobs: Sequence[Knob]) -> FrozenTrial:
    """A completed trial as Optuna records it: its active knobs' values and distributions, and its objective."""
    drawn = FixedTrial({k.name: row.get(f"{CONFIG_PREFIX}{k.name}") for k in knobs})
    DefineByRunSpace(knobs)(drawn)  # asks for the active knobs only, as the searcher did
    return create_trial(params=drawn.params, distributions=drawn.distributions, value=float(row[OBJECTIVE]))


def _varying_knobs(trials: Sequence[FrozenTrial], knobs: Sequence[Knob]) -> list[str]:
    """The knobs, in spec order, that every trial has and that take more than one value among them."""
    return [
        k.name for k in knobs if all(k.name in t.params for t in trials) and len({t.params[k.name] for t in trials}) > 1
    ]


@contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Without Optuna's line announcing each new study: this one is a calculation, not a search."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


def write_importances(table: pd.DataFrame, directory: Path) -> Path:
    path = directory / IMPORTANCES_FILE
    table.to_csv(path, index=False)
    return path


def read_importances(directory: Path) -> pd.DataFrame | None:
    """The sweep's importance table, or None if none was written (too few completed trials, say)."""
    path = directory / IMPORTANCES_FILE
    return pd.read_csv(path) if path.is_file() else None


def format_importances(table: pd.DataFrame) -> str:
    """The table as the results command prints it, a knob a line."""
    width = max(len(str(knob)) for knob in table["knob"])
    lines = [f"Knob importance for {OBJECTIVE} (fANOVA over the completed trials):"]
    lines += [f"  {row.knob:<{width}}  {row.importance:.3f}" for row in table.itertuples(index=False)]
    return "\n".join(lines)
