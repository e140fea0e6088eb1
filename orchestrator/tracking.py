"""MLflow tracking: one parent run per sweep, one child run per trial.

Everything is logged from the Tune driver, so trials never talk to the
tracking server. Metrics are buffered and sent with ``log_batch`` (at most
1,000 points a call) when the buffer is full, when ``flush_interval_s`` has
passed, or when a trial ends; never one call per metric.

Child runs are found again by their ``effsweep.trial_id`` tag under the
sweep's parent run, so running a sweep again or resuming it reuses them.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from mlflow.utils.validation import MAX_METRICS_PER_BATCH, MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH
from ray.tune import Callback
from ray.tune.experiment import Trial

from orchestrator.layout import SweepLayout, SweepRecord
from orchestrator.pruning import PredictionFeed
from orchestrator.results import reported_metrics, trial_status
from orchestrator.selection_view import SelectionPictures

TRIAL_ID_TAG = "effsweep.trial_id"
SWEEP_TAG = "effsweep.sweep"
STATUS_TAG = "status"
REPORTED_VECTORS = "reported_vectors.json"

# How an effsweep trial status shows as an MLflow run status.
RUN_STATUS = {"completed": "FINISHED", "pruned": "KILLED", "diverged": "FAILED", "error": "FAILED"}


# Without it, MLflow 3's UI opens an experiment in its GenAI (traces) view, not its runs table.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def ensure_experiment(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    """Id of the experiment called ``name``, created (with ``artifact_location``) if missing."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return client.create_experiment(name, artifact_location=artifact_location, tags=EXPERIMENT_KIND)
    for key, value in EXPERIMENT_KIND.items():
        if key not in experiment.tags:
            client.set_experiment_tag(experiment.experiment_id, key, value)
    return experiment.experiment_id


def open_parent_run(
    client: MlflowClient,
    experiment_id: str,
    *,
    sweep_name: str,
    params: Mapping[str, Any],
    tags: Mapping[str, str],
    previous_run_id: str | None,
) -> str:
    """The sweep's parent run: the previous one if the store still has it, else a new one."""
    if previous_run_id and _run_in_experiment(client, previous_run_id, experiment_id):
        client.update_run(previous_run_id, status="RUNNING")
        return previous_run_id
    run = client.create_run(experiment_id, run_name=sweep_name, tags={SWEEP_TAG: sweep_name, **tags})
    log_params(client, run.info.run_id, params)
    return run.info.run_id


def _run_in_experiment(client: MlflowClient, run_id: str, experiment_id: str) -> bool:
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return False
    return run.info.experiment_id == experiment_id and run.info.lifecycle_stage == "active"


def log_params(client: MlflowClient, run_id: str, params: Mapping[str, Any]) -> None:
    """Every set parameter (an unset one, such as another schedule's law, says nothing).

    A value longer than MLflow allows (a learned schedule's list) goes whole into an artifact
    ``params/KEY.json``, which the parameter names.
    """
    items = []
    for key, value in params.items():
        if value is None:
            continue
        text = str(value)
        if len(text) > MAX_PARAM_VAL_LENGTH:
            artifact = f"params/{key}.json"
            client.log_text(run_id, json.dumps(value, default=str), artifact)
            text = f"(too long: in artifact {artifact})"
        items.append(Param(key, text))
    for chunk in _chunks(items, MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, params=chunk)


def set_tags(client: MlflowClient, run_id: str, tags: Mapping[str, Any]) -> None:
    items = [RunTag(key, str(value)) for key, value in tags.items()]
    for chunk in _chunks(items, MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, tags=chunk)


def child_runs(client: MlflowClient, experiment_id: str, parent_run_id: str) -> dict[str, str]:
    """Trial id -> run id of every child run already under the parent run."""
    found: dict[str, str] = {}
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=f"tags.{MLFLOW_PARENT_RUN_ID} = '{parent_run_id}'",
            max_results=1000,
            page_token=token,
        )
        for run in page:
            trial_id = run.data.tags.get(TRIAL_ID_TAG)
            if trial_id:
                found[trial_id] = run.info.run_id
        token = page.token
        if not token:
            return found


def drop_orphan_child_runs(
    client: MlflowClient, experiment_id: str, parent_run_id: str, known: Callable[[str], bool]
) -> int:
    """Delete the child runs of trials the sweep no longer has; how many.

    A driver killed between starting a trial and Tune's next experiment
    snapshot leaves a child run for a trial the restored sweep never heard
    of: it starts that configuration again under a new trial id. The orphan
    is deleted (MLflow keeps it in its trash), so each trial has one run.
    """
    runs = child_runs(client, experiment_id, parent_run_id)
    orphans = [run_id for trial_id, run_id in runs.items() if not known(trial_id)]
    for run_id in orphans:
        client.delete_run(run_id)
    return len(orphans)


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class MetricBatcher:
    """Buffers metric points per run and sends them with ``log_batch``.

    Example:
        >>> import tempfile
        >>> client = MlflowClient(f"sqlite:///{tempfile.mkdtemp()}/mlflow.db")
        >>> run_id = client.create_run(client.create_experiment("doc")).info.run_id
        >>> batcher = MetricBatcher(client, flush_interval_s=60)
        >>> batcher.add(run_id, {"val_loss": 2.5}, step=10, timestamp_ms=0)
        >>> batcher.flush()
        >>> [m.value for m in client.get_metric_history(run_id, "val_loss")]
        [2.5]
    """

    def __init__(
        self, client: MlflowClient, *, flush_interval_s: float = 2.0, max_points: int = MAX_METRICS_PER_BATCH
    ) -> None:
        if flush_interval_s < 0:
            raise ValueError(f"flush_interval_s must be non-negative, got {flush_interval_s}")
        if not 1 <= max_points <= MAX_METRICS_PER_BATCH:
            raise ValueError(f"max_points must be in [1, {MAX_METRICS_PER_BATCH}], got {max_points}")
        self._client = client
        self._interval = flush_interval_s
        self._max_points = max_points
        self._pending: dict[str, list[Metric]] = defaultdict(list)
        self._size = 0
        self._last_flush = time.monotonic()
        self.calls = 0

    def add(self, run_id: str, metrics: Mapping[str, float], *, step: int, timestamp_ms: int) -> None:
        self._pending[run_id].extend(Metric(k, v, timestamp_ms, step) for k, v in metrics.items())
        self._size += len(metrics)

    def due(self) -> bool:
        return self._size >= self._max_points or (
            self._size > 0 and time.monotonic() - self._last_flush >= self._interval
        )

    def flush(self, run_id: str | None = None) -> None:
        """Send what is buffered: for one run, or for all."""
        run_ids = [run_id] if run_id is not None else list(self._pending)
        for rid in run_ids:
            points = self._pending.pop(rid, [])
            self._size -= len(points)
            for chunk in _chunks(points, self._max_points):
                self._client.log_batch(rid, metrics=chunk)
                self.calls += 1
        if run_id is None:
            self._last_flush = time.monotonic()


class MlflowTrialCallback(Callback):
    """A Tune callback that mirrors every trial into a child run of the sweep's parent run.

    It holds only the sweep's directory and reads where to log from its
    ``sweep.json`` in ``setup``: Tune pickles callbacks into its experiment
    checkpoint, and a restored sweep must log where the sweep now logs.
    """

    def __init__(self, sweep_dir: Path, flush_interval_s: float = 2.0) -> None:
        self.sweep_dir = sweep_dir
        self.flush_interval_s = flush_interval_s

    def __getstate__(self) -> dict[str, Any]:
        return {"sweep_dir": self.sweep_dir, "flush_interval_s": self.flush_interval_s}

    def setup(self, **info: Any) -> None:
        record = SweepRecord.load(SweepLayout(self.sweep_dir))
        self._client = MlflowClient(record.tracking_uri)
        self._experiment_id = record.experiment_id
        self._parent_run_id = record.parent_run_id
        self._batcher = MetricBatcher(self._client, flush_interval_s=self.flush_interval_s)
        self._runs = child_runs(self._client, self._experiment_id, self._parent_run_id)
        self._pictures = SelectionPictures.load(SweepLayout(self.sweep_dir).selection_dir)
        self._predictions = PredictionFeed(self.sweep_dir)

    def run_id(self, trial: Trial) -> str:
        """The child run of ``trial``, created on first sight."""
        run_id = self._runs.get(trial.trial_id)
        if run_id is None:
            run = self._client.create_run(
                self._experiment_id,
                run_name=str(trial),
                tags={MLFLOW_PARENT_RUN_ID: self._parent_run_id, TRIAL_ID_TAG: trial.trial_id},
            )
            run_id = self._runs[trial.trial_id] = run.info.run_id
            log_params(self._client, run_id, trial.config)
            self._log_selection_picture(run_id, trial.config)
        return run_id

    def _log_selection_picture(self, run_id: str, config: dict[str, Any]) -> None:
        if self._pictures is None or "selection.strategy" not in config:
            return
        picture = self._pictures.draw(config["selection.strategy"], config.get("selection.fraction", 1.0))
        if picture is not None:
            self._client.log_artifact(run_id, str(picture), "selection")

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        run_id = self.run_id(trial)
        self._client.update_run(run_id, status="RUNNING")

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any) -> None:
        metrics = reported_metrics(result)
        step = int(metrics.get("step", result.get("training_iteration", 0)))
        timestamp_ms = int(result.get("timestamp", time.time()) * 1000)
        self._batcher.add(self.run_id(trial), metrics, step=step, timestamp_ms=timestamp_ms)
        if self._batcher.due():
            self._batcher.flush()

    def on_step_begin(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        self._log_predictions()
        if self._batcher.due():
            self._batcher.flush()

    def _log_predictions(self) -> None:
        """The MPL pruner's predictions (if it runs) go to their trials' runs at the step they were made."""
        for line in self._predictions.new():
            run_id = self._runs.get(line["trial_id"])
            if run_id is not None:
                metrics = {k: line[k] for k in ("mpl_pred_final", "mpl_pred_low", "mpl_pred_high")}
                self._batcher.add(run_id, metrics, step=line["step"], timestamp_ms=int(time.time() * 1000))

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._finish(trial, errored=False)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._finish(trial, errored=True)

    def _finish(self, trial: Trial, *, errored: bool) -> None:
        self._log_predictions()
        run_id = self.run_id(trial)
        self._batcher.flush(run_id)
        # Reported vectors (a meta-iteration's hypergradients) are no metrics; they go whole into an artifact.
        vectors = {k: v for k, v in (trial.last_result or {}).items() if isinstance(v, (list, tuple))}
        if vectors:
            self._client.log_text(run_id, json.dumps(vectors, default=str), REPORTED_VECTORS)
        status = trial_status(trial.last_result, errored)
        self._client.set_tag(run_id, STATUS_TAG, status)
        self._client.set_terminated(run_id, status=RUN_STATUS[status])

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        self._batcher.flush()


def finish_parent_run(
    client: MlflowClient,
    run_id: str,
    *,
    metrics: Mapping[str, float],
    tags: Mapping[str, Any],
    artifacts: Iterable[Path],
    status: str = "FINISHED",
) -> None:
    """Summary metrics, tags and artifacts on the parent run, then close it."""
    timestamp_ms = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), timestamp_ms, 0) for k, v in metrics.items()])
    set_tags(client, run_id, tags)
    for path in artifacts:
        client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, status=status)
