"""What the MLflow writer process does with a sweep's journaled ops: child runs found or made, points sent once.

``RunWriter`` (``orchestrator.run_writer``) journals every op on the driver and hands it to this
process, which applies it to the tracking store. The ops are idempotent: a trial's child run is
found by its trial-id tag before one is created, and a metric point is sent only if its run holds
no point of that metric at that step, so replaying a journal after a crash duplicates nothing.
See docs/resume.md.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from mlflow.entities import RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from orchestrator.mlflow_runs import TRIAL_ID_TAG, MetricBatcher, child_runs, log_params, param_text

logger = logging.getLogger("effsweep.tracking")

STATUS_TAG = "status"
RECONCILED_TAG = "effsweep.reconciled"
REPORTED_VECTORS = "reported_vectors.json"
# How an effsweep trial status shows as an MLflow run status.
RUN_STATUS = {"completed": "FINISHED", "pruned": "KILLED", "diverged": "FAILED", "error": "FAILED"}
# How often an idle writer looks whether the driver that started it is still alive.
PARENT_CHECK_S = 0.5
# How long metric points wait for more before they go out as one batch. Every batch is a store transaction
# (for SQLite a commit and a sync, milliseconds of CPU): sent a report at a time they took that CPU from
# the trials at every report; gathered over this window they cost one transaction every few seconds. A
# flush, a trial's end and the writer's stop send at once.
BATCH_WINDOW_S = 2.0

OnOpen = Callable[[MlflowClient, str, Mapping[str, Any]], None]
# What the reader puts on the ops queue when the driver's end of the input closed without a stop.
_DRIVER_GONE = ("driver gone",)
# What the writer acts on when no op came for a while.
_IDLE = ("idle",)


@dataclass(frozen=True)
class WriterSetup:
    """The first thing the driver sends a writer process: where to write, and the driver's import path."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    journal: Path
    on_open: OnOpen | None
    sys_path: list[str]


def serve_stream(setup: WriterSetup, stream: IO[bytes], answers_fd: int) -> None:
    """The writer process's work: apply the pickled ops read from ``stream``; flushes are answered on ``answers_fd``."""
    ops: queue.Queue = queue.Queue()
    threading.Thread(target=_read_ops, args=(stream, ops), daemon=True).start()
    with os.fdopen(answers_fd, "w") as answers:

        def answer(flush: int) -> None:
            answers.write(f"{flush}\n")
            answers.flush()

        writer = StoreWriter(
            MlflowClient(setup.tracking_uri), setup.experiment_id, setup.parent_run_id, setup.journal, setup.on_open
        )
        writer.serve(ops, answer)


def _read_ops(stream: IO[bytes], ops: queue.Queue) -> None:
    while True:
        try:
            ops.put(pickle.load(stream))
        except EOFError:
            ops.put(_DRIVER_GONE)  # after a stop it is never read
            return


class StoreWriter:
    """Applies journaled ops to the tracking store; one per sweep, the only writer of its child runs."""

    def __init__(
        self,
        client: MlflowClient,
        experiment_id: str,
        parent_run_id: str,
        journal: Path,
        on_open: OnOpen | None,
        *,
        batch_window_s: float = BATCH_WINDOW_S,
    ) -> None:
        self._client = client
        self._batch = MetricBatcher(client, flush_interval_s=batch_window_s)
        self._experiment_id = experiment_id
        self._parent_run_id = parent_run_id
        self._journal = journal
        self._on_open = on_open
        self._runs: dict[str, str] | None = None  # trial id -> run id, read from the store once
        self._logged: dict[str, set[tuple[str, int]]] = {}  # run id -> (metric, step) already in the store

    def serve(self, ops: queue.Queue, answer: Callable[[int], None]) -> None:
        """Apply ``ops`` until ``None``; metric points go out in batches gathered over ``BATCH_WINDOW_S``.

        A ``("flush", n)`` op is answered with ``answer(n)`` once everything before it is written.
        The writer stops on its own when the driver that started it dies (its input closes, or, should
        another process hold that open, it finds a new parent): a resumed sweep's writer replays the
        journal, and two writers on one store could both send a point.
        """
        parent = os.getppid()
        while True:
            try:
                item = ops.get(timeout=min(PARENT_CHECK_S, self._batch.seconds_until_due()))
            except queue.Empty:
                item = _IDLE
            if item == _DRIVER_GONE or os.getppid() != parent:
                return  # what it staged is in the journal, for the resumed sweep's writer to send
            metrics = isinstance(item, dict) and item["op"] == "metrics"
            if metrics:
                self._guard(self._stage, item)
            if (metrics or item == _IDLE) and not self._batch.due():
                continue  # more may come before the window closes: batch it
            self._guard(self._batch.flush)
            if item is None:
                return
            if isinstance(item, tuple):
                if item[0] == "flush":
                    answer(item[1])
            elif item["op"] != "metrics":
                self._guard(getattr(self, f"_do_{item['op']}"), item)

    def _guard(self, action: Callable[..., None], *args: Any) -> None:
        # A store that fails now loses nothing: the op stays in the journal, which the next resume replays.
        try:
            action(*args)
        except (MlflowException, OSError) as exc:
            logger.warning("MLflow write failed (%s); the sweep's journal keeps it for the next resume", exc)

    def _stage(self, op: dict[str, Any]) -> None:
        run_id = self._run_of(op["trial"])
        if run_id is None:
            return
        seen = self._seen(run_id)
        new = {key: float(value) for key, value in op["values"].items() if (key, op["step"]) not in seen}
        seen.update((key, op["step"]) for key in new)
        self._batch.add(run_id, new, step=int(op["step"]), timestamp_ms=int(op["ts"]))

    def _do_open(self, op: dict[str, Any]) -> None:
        trial_id = op["trial"]
        run_id = self._run_of(trial_id) or self._adopt(trial_id, op["config"], set(op["live"]))
        if run_id is None:
            tags = {MLFLOW_PARENT_RUN_ID: self._parent_run_id, TRIAL_ID_TAG: trial_id}
            run_id = self._client.create_run(self._experiment_id, run_name=op["name"], tags=tags).info.run_id
            self._child_runs()[trial_id] = run_id
            self._logged[run_id] = set()
            log_params(self._client, run_id, op["config"])
            if self._on_open is not None:
                self._on_open(self._client, run_id, op["config"])
        self._client.update_run(run_id, status="RUNNING")

    def _adopt(self, trial_id: str, config: Mapping[str, Any], live: set[str]) -> str | None:
        wanted = {k: param_text(k, v) for k, v in config.items() if v is not None}
        runs = self._child_runs()
        for other, run_id in list(runs.items()):
            if other in live or self._client.get_run(run_id).data.params != wanted:
                continue
            why = f"taken over from trial {other}, which a killed driver started before Tune recorded it"
            self._client.log_batch(run_id, tags=[RunTag(TRIAL_ID_TAG, trial_id), RunTag(RECONCILED_TAG, why)])
            runs[trial_id] = runs.pop(other)
            self._forget(other)
            return run_id
        return None

    def _do_finish(self, op: dict[str, Any]) -> None:
        run_id = self._run_of(op["trial"])
        if run_id is None:
            return
        if op["vectors"]:
            self._client.log_text(run_id, json.dumps(op["vectors"], default=str), REPORTED_VECTORS)
        self._client.set_tag(run_id, STATUS_TAG, op["status"])
        self._client.set_terminated(run_id, status=RUN_STATUS[op["status"]])

    def _do_reconcile(self, op: dict[str, Any]) -> None:
        live: dict[str, str | None] = op["live"]
        runs = self._child_runs()
        for trial_id, run_id in list(runs.items()):
            if trial_id not in live:
                why = "no trial of the sweep: its driver was killed before Tune recorded the trial"
                self._end(run_id, "KILLED", why)
                self._client.delete_run(run_id)
                del runs[trial_id]
                self._forget(trial_id)
            elif live[trial_id] is None:
                self._end(run_id, "KILLED", "the sweep stopped before this trial finished; resume continues it")
            elif self._client.get_run(run_id).info.status == "RUNNING":
                self._do_finish({"trial": trial_id, "status": live[trial_id], "vectors": {}})

    def _end(self, run_id: str, status: str, why: str) -> None:
        if self._client.get_run(run_id).info.status == "RUNNING":
            self._client.log_batch(run_id, tags=[RunTag(RECONCILED_TAG, why)])
            self._client.set_terminated(run_id, status=status, end_time=int(time.time() * 1000))

    def _forget(self, trial_id: str) -> None:
        """A replay skips the trial's ops from now on: its run was taken over or deleted."""
        append_to_journal(self._journal, {"op": "forget", "trial": trial_id})

    def _child_runs(self) -> dict[str, str]:
        # This writer is the only one making child runs of the parent, so one read of the store lasts.
        if self._runs is None:
            self._runs = child_runs(self._client, self._experiment_id, self._parent_run_id)
        return self._runs

    def _run_of(self, trial_id: str) -> str | None:
        return self._child_runs().get(trial_id)

    def _seen(self, run_id: str) -> set[tuple[str, int]]:
        """The (metric, step) points the store already holds for a run, read once per run."""
        if run_id not in self._logged:
            keys = self._client.get_run(run_id).data.metrics
            self._logged[run_id] = {
                (key, point.step) for key in keys for point in self._client.get_metric_history(run_id, key)
            }
        return self._logged[run_id]


def journal_line(op: Mapping[str, Any]) -> bytes:
    return (json.dumps(op, default=str) + "\n").encode("utf-8")


def open_journal(journal: Path) -> int:
    """The journal opened for appending: each ``write`` of one op lands whole, never interleaved with another
    process's appends."""
    return os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)  # as open(), under the umask


def append_to_journal(journal: Path, op: Mapping[str, Any]) -> None:
    """Append one op as one ``write``."""
    fd = open_journal(journal)
    try:
        os.write(fd, journal_line(op))
    finally:
        os.close(fd)
