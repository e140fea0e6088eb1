"""Replaying recorded trials through real Tune schedulers, so pruners compare without retraining.

A curve bank holds the reports of trials run to the end (``benchmarks/curves/bank.parquet``:
one row per report, with the trial's config as JSON). ``replay_trial`` is a
Tune function trainable that, given one of those configs, reports what that
trial reported, in order, so any scheduler sees exactly the real curve and
may stop it early; the compute a pruner spends is the compute of the reports
it let through.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
from ray import tune
from ray.tune.search import Searcher

from trainables.schedules import schedule_class


def config_key(config: dict[str, Any]) -> str:
    """The same key for the same trial config, whatever the key order."""
    return json.dumps(config, sort_keys=True, default=str)


def read_bank(path: Path) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """(configs, reports by config key) of a curve bank."""
    table = pd.read_parquet(path)
    configs, reports = [], {}
    for config_json, rows in table.groupby("config", sort=False):
        config = _as_recorded_now(json.loads(config_json))
        configs.append(config)
        reports[config_key(config)] = [
            {k: v for k, v in row.items() if k not in ("config", "trial") and not _missing(v)}
            for row in rows.sort_values("step").to_dict(orient="records")
        ]
    return configs, reports


def _as_recorded_now(config: dict[str, Any]) -> dict[str, Any]:
    """A banked config without the schedule settings its family does not read (banks list every family's)."""
    family = schedule_class(config.get("schedule.name", "constant"))
    return {
        key: value
        for key, value in config.items()
        if not key.startswith("schedule.") or key.split(".")[1] in {"name", *family.model_fields}
    }


def _missing(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def replay_trial(config: dict[str, Any], reports: dict[str, list[dict[str, Any]]]) -> None:
    """Report, in order, what the recorded trial with this config reported."""
    for report in reports[config_key(config)]:
        tune.report(report)


class BankOrder(Searcher):
    """Suggests the bank's configs in a given order, each once, then says it is finished."""

    def __init__(self, configs: list[dict[str, Any]]) -> None:
        super().__init__()
        self._queue = list(configs)

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        return self._queue.pop(0) if self._queue else Searcher.FINISHED

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass
