"""What the ``mpl`` scheduler adds to a sweep: its predictions on the trials' runs and pictures.

The pruner (``orchestrator.mpl.pruner``) writes each prediction to ``DIR/mpl/predictions.jsonl`` as it makes
it; these hooks log them to the trials' runs at the step they were made, draw them on each trial's loss
curves, and plot them against the final losses reached (``mpl_predictions.png`` on the parent run).
See ``docs/mpl.md``.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pandas as pd
from matplotlib.axes import Axes

from orchestrator.mpl.pruner import PREDICTION_METRICS, PredictionFeed, read_predictions
from orchestrator.plots import draw_predictions, plot_predictions
from orchestrator.sweep_hooks import MetricFeed, SweepEnd, SweepHooks, TrialMarks, TrialMetrics


class PredictionHooks(SweepHooks):
    """The MPL pruner's predictions as metrics, marks on the trials' curves and a parent-run picture."""

    def metric_feeds(self, sweep_dir: Path) -> list[MetricFeed]:
        return [PredictionMetrics(sweep_dir)]

    def trial_marks(self, end: SweepEnd) -> TrialMarks | None:
        predictions = read_predictions(end.layout.root)
        if predictions.empty:
            return None
        judged = {trial_id: rows for trial_id, rows in predictions.groupby("trial_id")}
        return functools.partial(_draw_trial_predictions, judged)

    def sweep_artifacts(self, end: SweepEnd) -> list[Path]:
        predictions = read_predictions(end.layout.root)
        if predictions.empty:
            return []
        return [plot_predictions(predictions, end.results, end.layout.results_dir / "mpl_predictions.png")]


class PredictionMetrics:
    """The predictions file as a metric feed: ``mpl_pred_final``, ``mpl_pred_low`` and ``mpl_pred_high``."""

    def __init__(self, sweep_dir: Path) -> None:
        self._lines = PredictionFeed(sweep_dir)

    def new(self) -> list[TrialMetrics]:
        return [
            TrialMetrics(line["trial_id"], line["step"], {k: line[k] for k in PREDICTION_METRICS})
            for line in self._lines.new()
        ]


def _draw_trial_predictions(judged: dict[str, pd.DataFrame], ax: Axes, trial_id: str) -> None:
    if trial_id in judged:
        draw_predictions(ax, judged[trial_id])
