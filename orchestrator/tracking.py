"""The Tune callback that mirrors every trial into a child run of the sweep's MLflow parent run.

Everything is logged from the Tune driver, so trials never talk to the
tracking server; the writes themselves go through a ``RunWriter``
(``orchestrator.run_writer``): journaled in the sweep directory, sent in
batches by a writer process, replayed without duplicates after a crash.
Besides the trials' reports it logs what the sweep's hooks feed it
(``SweepHooks.metric_feeds``). See ``docs/architecture.md``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient
from ray.tune import Callback
from ray.tune.experiment import Trial

from orchestrator.layout import SweepLayout, SweepRecord
from orchestrator.results import reported_metrics, trial_status
from orchestrator.run_writer import RunWriter
from orchestrator.selection.pictures import SelectionPictures
from orchestrator.sweep_hooks import SweepHooks

# How long a sweep's start waits for its MLflow writer to be serving before the first trials start.
WRITER_START_WAIT_S = 120.0


class MlflowTrialCallback(Callback):
    """Opens, fills and ends each trial's child run.

    It holds only the sweep's directory and hooks, and reads where to log
    from its ``sweep.json`` in ``setup``: Tune pickles callbacks into its
    experiment checkpoint, and a restored sweep must log where the sweep now
    logs.
    """

    def __init__(self, sweep_dir: Path, hooks: Sequence[SweepHooks] = ()) -> None:
        self.sweep_dir = sweep_dir
        self.hooks = list(hooks)

    def __getstate__(self) -> dict[str, Any]:
        return {"sweep_dir": self.sweep_dir, "hooks": self.hooks}

    def setup(self, **info: Any) -> None:
        layout = SweepLayout(self.sweep_dir)
        record = SweepRecord.load(layout)
        pictures = SelectionPictures.load(layout.selection_dir)
        self._writer = RunWriter(
            record.tracking_uri, record.experiment_id, record.parent_run_id, layout.tracking_journal,
            on_open=None if pictures is None else functools.partial(_log_selection_picture, pictures),
        )  # fmt: skip
        # Tune starts no trial before setup returns: waiting here for the writer to be serving (MLflow imported,
        # the store open, any journal replayed: about 3 s of CPU) keeps that start-up off the first trials'
        # cores. A store too slow to answer in time only delays the writes; nothing is lost.
        self._writer.flush(timeout_s=WRITER_START_WAIT_S)
        self._feeds = [feed for hooks in self.hooks for feed in hooks.metric_feeds(self.sweep_dir)]
        self._opened: set[str] = set()

    def _open(self, trial: Trial, trials: list[Trial]) -> None:
        if trial.trial_id not in self._opened:
            self._opened.add(trial.trial_id)
            self._writer.open_trial(trial.trial_id, str(trial), trial.config, live=[t.trial_id for t in trials])

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._open(trial, trials)

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any) -> None:
        self._open(trial, trials)
        metrics = reported_metrics(result)
        step = int(metrics.get("step", result.get("training_iteration", 0)))
        timestamp_ms = int(result.get("timestamp", time.time()) * 1000)
        self._writer.log_metrics(trial.trial_id, metrics, step=step, timestamp_ms=timestamp_ms)

    def on_step_begin(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        self._log_feeds()

    def _log_feeds(self) -> None:
        """What the hooks' feeds brought since the last call goes to its trials' runs, at its steps."""
        now_ms = int(time.time() * 1000)
        for feed in self._feeds:
            for line in feed.new():
                self._writer.log_metrics(line.trial_id, line.metrics, step=line.step, timestamp_ms=now_ms)

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._finish(trial, trials, errored=False)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._finish(trial, trials, errored=True)

    def _finish(self, trial: Trial, trials: list[Trial], *, errored: bool) -> None:
        self._log_feeds()
        self._open(trial, trials)
        # Reported vectors (lists, such as a gradient with respect to each hyperparameter) are no metrics; they go whole
        # into an artifact.
        vectors = {k: v for k, v in (trial.last_result or {}).items() if isinstance(v, (list, tuple))}
        self._writer.finish_trial(trial.trial_id, trial_status(trial.last_result, errored), vectors)

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        self._log_feeds()
        self._writer.reconcile({t.trial_id: _final_status(t) for t in trials})
        self._writer.close()


def _log_selection_picture(
    pictures: SelectionPictures, client: MlflowClient, run_id: str, config: Mapping[str, Any]
) -> None:
    """A trial's picture of its selected documents, drawn by the writer process when it opens the trial's run."""
    if "selection.strategy" not in config:
        return
    picture = pictures.draw(config["selection.strategy"], config.get("selection.fraction", 1.0))
    if picture is not None:
        client.log_artifact(run_id, str(picture), "selection")


def _final_status(trial: Trial) -> str | None:
    if trial.status == Trial.TERMINATED:
        return trial_status(trial.last_result, errored=False)
    if trial.status == Trial.ERROR:
        return trial_status(trial.last_result, errored=True)
    return None
