"""Trial outcomes, the Parquet export of a sweep, and the results table.

A sweep's results live in ``DIR/results/``: ``metrics.parquet`` holds every
report of every trial (one row per report), ``trials.parquet`` one row per
trial with its status, objective and config. ``effsweep results DIR`` reads
them without Ray or MLflow.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pandas.api.types import is_bool_dtype, is_numeric_dtype
from ray.tune import ResultGrid
from ray.tune.result import AUTO_RESULT_KEYS

from trainables.loop import DIVERGED, FINAL_BITS_PER_BYTE, OBJECTIVE, REPORTED_LABELS

STATUSES = ("completed", "pruned", "diverged", "error")
THROUGHPUT = ("tokens_per_s", "mfu")
CONFIG_PREFIX = "config."


def trial_status(last_result: Mapping[str, Any] | None, errored: bool) -> str:
    """``completed`` (reached the objective), ``diverged``, ``error``, or ``pruned`` (stopped early)."""
    if errored:
        return "error"
    last_result = last_result or {}
    if last_result.get(DIVERGED):
        return "diverged"
    if _finite(last_result.get(OBJECTIVE)):
        return "completed"
    return "pruned"


def reported_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The numeric metrics a trial reported, without Tune's own bookkeeping fields."""
    return {
        key: float(value)
        for key, value in result.items()
        if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and _is_metric_key(key)
    }


def _is_metric_key(key: str) -> bool:
    return key not in AUTO_RESULT_KEYS and key != "done" and not key.startswith("config/")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


@dataclass(frozen=True)
class SweepResults:
    """The per-trial table and the per-report table of a sweep."""

    trials: pd.DataFrame
    metrics: pd.DataFrame

    def best(self) -> pd.Series | None:
        """The completed trial with the lowest objective, if any trial completed."""
        done = self.trials[self.trials["status"] == "completed"]
        return None if done.empty else done.sort_values(OBJECTIVE).iloc[0]

    def counts(self) -> dict[str, int]:
        counts = self.trials["status"].value_counts()
        return {status: int(counts.get(status, 0)) for status in STATUSES}


def collect_results(grid: ResultGrid) -> SweepResults:
    """Tables of a finished (or restored) Tune run, from Tune's own result files."""
    trial_rows, metric_frames = [], []
    for result in grid:
        last = result.metrics or {}
        trial_id = last.get("trial_id") or Path(result.path).name
        history = result.metrics_dataframe
        if history is not None and not history.empty:
            keep = [
                c for c in history.columns
                if c in REPORTED_LABELS
                or (_is_metric_key(c) and is_numeric_dtype(history[c]) and not is_bool_dtype(history[c]))
            ]  # fmt: skip
            frame = history[keep].copy()
            frame.insert(0, "trial_id", trial_id)
            metric_frames.append(frame)
        row = {
            "trial_id": trial_id,
            "status": trial_status(last, result.error is not None),
            OBJECTIVE: last.get(OBJECTIVE, math.nan),
            FINAL_BITS_PER_BYTE: last.get(FINAL_BITS_PER_BYTE, math.nan),
            "val_loss": last.get("val_loss", math.nan),
            "compute": last.get("compute", 0.0),
            "step": last.get("step", 0),
            "error": str(result.error) if result.error else "",
            **_throughput(history),
        }
        row.update({f"{CONFIG_PREFIX}{k}": v for k, v in sorted(result.config.items())})
        trial_rows.append(row)
    trials = pd.DataFrame(trial_rows)
    metrics = pd.concat(metric_frames, ignore_index=True) if metric_frames else pd.DataFrame({"trial_id": []})
    return SweepResults(trials.sort_values(OBJECTIVE, na_position="last", ignore_index=True), metrics)


def _throughput(history: pd.DataFrame | None) -> dict[str, float]:
    """A trial's typical ``tokens_per_s`` and ``mfu``: medians over its reports after the first, whose
    interval holds compilation and warm-up (over all of them when there is one)."""
    typical = {}
    for key in THROUGHPUT:
        values = history[key].dropna() if history is not None and key in history else pd.Series(dtype=float)
        if not values.empty:
            typical[key] = float(values.iloc[1:].median() if len(values) > 1 else values.iloc[0])
    return typical


def write_results(results: SweepResults, directory: Path) -> list[Path]:
    """Write the two Parquet tables; returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / "trials.parquet", directory / "metrics.parquet"]
    # Config columns mix types across trials (a knob may be absent); Parquet needs one type a column.
    trials = results.trials.copy()
    for column in trials.columns:
        if column.startswith(CONFIG_PREFIX) and trials[column].map(type).nunique() > 1:
            trials[column] = trials[column].map(lambda v: None if v is None or v != v else str(v))
    trials.to_parquet(paths[0], index=False)
    results.metrics.to_parquet(paths[1], index=False)
    return paths


def read_results(directory: Path) -> SweepResults:
    trials_path, metrics_path = directory / "trials.parquet", directory / "metrics.parquet"
    for path in (trials_path, metrics_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; has the sweep finished?")
    return SweepResults(pd.read_parquet(trials_path), pd.read_parquet(metrics_path))


def format_table(trials: pd.DataFrame, knobs: Sequence[str], top: int | None = None) -> str:
    """Trials sorted by the objective, with the searched knobs as columns."""
    columns = ["trial_id", "status", OBJECTIVE, FINAL_BITS_PER_BYTE, "compute"]
    table = trials.sort_values(OBJECTIVE, na_position="last").head(top) if top else trials
    shown = table.reindex(columns=columns)
    shown.insert(0, "rank", range(1, len(shown) + 1))
    for loss in (OBJECTIVE, FINAL_BITS_PER_BYTE):
        shown[loss] = shown[loss].map(lambda v: f"{v:.4f}" if _finite(v) else "-")
    shown["compute"] = shown["compute"].map(lambda v: f"{v:.3g}")
    if "tokens_per_s" in table:
        shown["tokens/s"] = table["tokens_per_s"].map(lambda v: f"{v:,.0f}" if _finite(v) else "-")
    if "mfu" in table and table["mfu"].notna().any():
        shown["mfu"] = table["mfu"].map(lambda v: f"{v:.1%}" if _finite(v) else "-")
    for knob in knobs:
        column = table.get(f"{CONFIG_PREFIX}{knob}")
        shown[knob] = ["-" if v is None or v != v else _short(v) for v in column] if column is not None else "-"
    return shown.to_string(index=False)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
