"""What a sweep leaves once its trials end: tables and pictures in ``DIR/results/``, logged to MLflow.

The parent run gets the Parquet tables, every trial's validation loss (``val_loss.png``), the knob
importances (table, picture and an ``importance.<knob>`` metric each) and what the sweep's hooks add
(``SweepHooks.sweep_artifacts``). Each child run gets its trial's loss curves (``loss_curves.png``, with
the hooks' marks). Artifact paths are fixed, so a sweep that is resumed and ends again replaces what it
logged before rather than adding to it. See ``docs/architecture.md``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from mlflow.tracking import MlflowClient

from orchestrator.importance import knob_importances, write_importances
from orchestrator.layout import SweepLayout, SweepRecord
from orchestrator.mlflow_runs import child_runs, log_summary_metrics
from orchestrator.plots import plot_importances, plot_trial_curves, plot_val_loss
from orchestrator.results import SweepResults, write_results
from orchestrator.spec import SweepSpec
from orchestrator.sweep_hooks import SweepEnd, SweepHooks, TrialMarks, active_hooks
from search_spaces.build import Knob

TRIAL_PLOT = "loss_curves.png"


def log_sweep_artifacts(
    results: SweepResults,
    spec: SweepSpec,
    record: SweepRecord,
    layout: SweepLayout,
    client: MlflowClient,
    hooks: Sequence[SweepHooks] | None = None,
) -> list[Path]:
    """Write the sweep's results; log each trial's curves on its child run, the importances and what the hooks
    report on the parent (``hooks``: those active for ``spec`` unless given).

    Returns the files for the parent run, which ``finish_parent_run`` logs.
    """
    hooks = active_hooks(spec) if hooks is None else hooks
    end = SweepEnd(results, spec, record, layout, client)
    directory = layout.results_dir
    artifacts = write_results(results, directory)
    if not results.metrics.empty:
        artifacts.append(plot_val_loss(results, directory / "val_loss.png"))
    for feature in hooks:
        artifacts += feature.sweep_artifacts(end)
    artifacts += _log_importances(results, spec.knobs, directory, client, record.parent_run_id)
    marks = [m for m in (feature.trial_marks(end) for feature in hooks) if m is not None]
    _log_trial_curves(results, marks, client, child_runs(client, record.experiment_id, record.parent_run_id))
    return artifacts


def _log_importances(
    results: SweepResults, knobs: Sequence[Knob], directory: Path, client: MlflowClient, run_id: str
) -> list[Path]:
    """The knob importances as parent-run metrics; their table and picture (none when they cannot be told)."""
    table = knob_importances(results.trials, knobs)
    if table.empty:
        return []
    log_summary_metrics(client, run_id, {f"importance.{row.knob}": row.importance for row in table.itertuples()})
    return [write_importances(table, directory), plot_importances(table, directory / "importances.png")]


def _log_trial_curves(
    results: SweepResults, marks: Sequence[TrialMarks], client: MlflowClient, runs: Mapping[str, str]
) -> None:
    """Each trial's loss curves on its child run; a trial without a run or without a report has none."""
    reports = {trial_id: rows for trial_id, rows in results.metrics.groupby("trial_id")}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / TRIAL_PLOT
        for _, trial in results.trials.iterrows():
            run_id, rows = runs.get(trial["trial_id"]), reports.get(trial["trial_id"])
            if run_id is None or rows is None:
                continue
            plot_trial_curves(trial, rows, path, marks)
            client.log_artifact(run_id, str(path))
