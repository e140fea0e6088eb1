"""MLflow runs of a sweep: its experiment, its parent run, child runs found by trial tag, batched writes.

Child runs are found again by their ``effsweep.trial_id`` tag under the
sweep's parent run, so running a sweep again or resuming it reuses them.
Every write goes in batches (``log_batch``), never one call per value.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from mlflow.utils.validation import MAX_METRICS_PER_BATCH, MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

from orchestrator.sqlite_store import create_sqlite_store

TRIAL_ID_TAG = "effsweep.trial_id"
SWEEP_TAG = "effsweep.sweep"


# Without it, MLflow 3's UI opens an experiment in its GenAI (traces) view, not its runs table.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def tracking_client(uri: str) -> MlflowClient:
    """A client of the store at ``uri``; a SQLite store that does not exist yet is made whole first
    (``orchestrator.sqlite_store``)."""
    path = _sqlite_path(uri)
    if path is not None and not path.exists():
        create_sqlite_store(path)
    return MlflowClient(uri)


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///"))


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
        if _too_long(value):
            client.log_text(run_id, json.dumps(value, default=str), _param_artifact(key))
        items.append(Param(key, param_text(key, value)))
    for chunk in chunks(items, MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, params=chunk)


def param_text(key: str, value: Any) -> str:
    """What MLflow stores for the parameter ``key``: the value's text, or where a value too long for it went."""
    return f"(too long: in artifact {_param_artifact(key)})" if _too_long(value) else str(value)


def _too_long(value: Any) -> bool:
    return len(str(value)) > MAX_PARAM_VAL_LENGTH


def _param_artifact(key: str) -> str:
    return f"params/{key}.json"


def set_tags(client: MlflowClient, run_id: str, tags: Mapping[str, Any]) -> None:
    items = [RunTag(key, str(value)) for key, value in tags.items()]
    for chunk in chunks(items, MAX_PARAMS_TAGS_PER_BATCH):
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


def chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    """``items`` in consecutive slices of at most ``size``."""
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
        return self._size >= self._max_points or (self._size > 0 and self.seconds_until_due() == 0)

    def seconds_until_due(self) -> float:
        """How long until what is buffered is old enough to send (infinite when nothing is)."""
        if self._size == 0:
            return math.inf
        return max(0.0, self._last_flush + self._interval - time.monotonic())

    def flush(self, run_id: str | None = None) -> None:
        """Send what is buffered: for one run, or for all."""
        run_ids = [run_id] if run_id is not None else list(self._pending)
        for rid in run_ids:
            points = self._pending.pop(rid, [])
            self._size -= len(points)
            for chunk in chunks(points, self._max_points):
                self._client.log_batch(rid, metrics=chunk)
                self.calls += 1
        if run_id is None:
            self._last_flush = time.monotonic()


def log_summary_metrics(client: MlflowClient, run_id: str, metrics: Mapping[str, float]) -> None:
    """One point at step 0 for each metric the run does not hold yet.

    A sweep that ends again after a resume (its driver killed during the export, say) keeps what it
    logged the first time rather than a second point of each metric.
    """
    held = client.get_run(run_id).data.metrics
    timestamp_ms = int(time.time() * 1000)
    points = [Metric(k, float(v), timestamp_ms, 0) for k, v in metrics.items() if k not in held]
    for chunk in chunks(points, MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=chunk)


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
    log_summary_metrics(client, run_id, metrics)
    set_tags(client, run_id, tags)
    for path in artifacts:
        client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, status=status)
