"""The MLflow writes of a sweep's trials: journaled, off Tune's event loop, and idempotent.

Every write the tracking callback asks for (open a trial's child run, log a
report's metrics, finish the run) is appended to a journal in the sweep
directory first, then carried out by one background thread, so a slow
tracking store never holds up Tune's loop (and with it the trials, whose
``report`` waits for the loop). The thread runs at a lower CPU priority than
the driver, so on a machine whose cores are all busy its writes wait for
idle time instead of taking it from trials on the same node. A driver
killed at any moment loses nothing: the next writer on the same journal
replays it before anything new. Replays cannot duplicate: a trial's child
run is found by its trial-id tag, and a metric point is sent only if its run
holds no point of that metric at that step. See ``docs/resume.md``.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from mlflow.utils.validation import MAX_METRICS_PER_BATCH

from orchestrator.mlflow_runs import TRIAL_ID_TAG, child_runs, chunks, log_params, param_text

logger = logging.getLogger("effsweep.tracking")

STATUS_TAG = "status"
RECONCILED_TAG = "effsweep.reconciled"
REPORTED_VECTORS = "reported_vectors.json"
# How an effsweep trial status shows as an MLflow run status.
RUN_STATUS = {"completed": "FINISHED", "pruned": "KILLED", "diverged": "FAILED", "error": "FAILED"}

OnOpen = Callable[[MlflowClient, str, Mapping[str, Any]], None]


class RunWriter:
    """Journals and writes the child runs of one sweep's parent run.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
        >>> experiment = client.create_experiment("doc")
        >>> parent = client.create_run(experiment).info.run_id
        >>> writer = RunWriter(client, experiment, parent, folder / "journal.jsonl")
        >>> writer.open_trial("t1", "trial one", {"lr": 0.1}, live=["t1"])
        >>> writer.log_metrics("t1", {"val_loss": 2.5}, step=10, timestamp_ms=0)
        >>> writer.log_metrics("t1", {"val_loss": 2.5}, step=10, timestamp_ms=0)  # a replay: not sent again
        >>> writer.finish_trial("t1", "completed")
        >>> writer.close()
        >>> run = client.get_run(child_runs(client, experiment, parent)["t1"])
        >>> run.info.status, [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")]
        ('FINISHED', [10])
    """

    def __init__(
        self,
        client: MlflowClient,
        experiment_id: str,
        parent_run_id: str,
        journal: Path,
        *,
        on_open: OnOpen | None = None,
    ) -> None:
        self._client = client
        self._experiment_id = experiment_id
        self._parent_run_id = parent_run_id
        self._on_open = on_open
        self._runs: dict[str, str] | None = None  # trial id -> run id, read from the store once, by the thread
        self._logged: dict[str, set[tuple[str, int]]] = {}  # run id -> (metric, step) already in the store
        self._queue: queue.Queue[dict[str, Any] | threading.Event | None] = queue.Queue()
        self.failures = 0
        journal.parent.mkdir(parents=True, exist_ok=True)
        for op in _read_journal(journal):
            self._queue.put(op)
        # Line-buffered: each op reaches the kernel when it is journaled, so a killed process keeps it.
        self._journal_lock = threading.Lock()
        self._journal = open(journal, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 (held open for the sweep)
        self._thread = threading.Thread(target=self._serve, name="effsweep-mlflow-writer", daemon=True)
        self._thread.start()

    # --- what the callback asks for (journaled, returns at once) ----------------------

    def open_trial(self, trial_id: str, name: str, config: Mapping[str, Any], *, live: Iterable[str]) -> None:
        """Find or create the trial's child run, mark it RUNNING and log its config as params.

        ``live`` names every trial the sweep holds now: a child run of another
        trial id with the same config was left by a killed driver before Tune
        recorded its trial, and is taken over instead of making a second run.
        """
        self._submit({"op": "open", "trial": trial_id, "name": name, "config": dict(config), "live": sorted(live)})

    def log_metrics(self, trial_id: str, metrics: Mapping[str, float], *, step: int, timestamp_ms: int) -> None:
        self._submit({"op": "metrics", "trial": trial_id, "step": step, "ts": timestamp_ms, "values": dict(metrics)})

    def finish_trial(self, trial_id: str, status: str, vectors: Mapping[str, Any] | None = None) -> None:
        """Tag the run with the trial's status and end it (``RUN_STATUS``); reported vectors go to an artifact."""
        self._submit({"op": "finish", "trial": trial_id, "status": status, "vectors": dict(vectors or {})})

    def reconcile(self, live: Mapping[str, str | None]) -> None:
        """End what a sweep's end must leave ended: ``live`` maps each trial id to its status, or None if unfinished.

        A child run of a trial the sweep does not hold is ended KILLED, tagged
        with why, and moved to MLflow's trash; an unfinished trial's run is
        ended KILLED until a resume takes it up again.
        """
        # Not journaled: it judges the sweep as it stands now, and a replay would judge later runs by it.
        self._queue.put({"op": "reconcile", "live": dict(live)})

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until everything asked for so far is written; whether it was in time."""
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout_s)

    def close(self) -> None:
        """Write everything asked for, then stop the thread."""
        self._queue.put(None)
        self._thread.join()
        self._journal.close()

    def _submit(self, op: dict[str, Any]) -> None:
        self._record(op)
        self._queue.put(op)

    def _record(self, op: dict[str, Any]) -> None:
        with self._journal_lock:  # the callback's thread and the writer's both append
            self._journal.write(json.dumps(op, default=str) + "\n")

    def _forget(self, trial_id: str) -> None:
        """A replay skips the trial's ops from now on: its run was taken over or deleted."""
        self._record({"op": "forget", "trial": trial_id})

    # --- the writer thread ------------------------------------------------------------

    def _serve(self) -> None:
        _lower_priority()
        pending: dict[str, list[Metric]] = {}
        while True:
            item = self._queue.get()
            if isinstance(item, dict) and item["op"] == "metrics":
                self._guard(self._stage, item, pending)
                if sum(map(len, pending.values())) < MAX_METRICS_PER_BATCH and not self._queue.empty():
                    continue  # more is coming: batch it
            self._guard(self._send, pending)
            if item is None:
                return
            if isinstance(item, threading.Event):
                item.set()
            elif item["op"] != "metrics":
                self._guard(getattr(self, f"_do_{item['op']}"), item)

    def _guard(self, action: Callable[..., None], *args: Any) -> None:
        # A store that fails now loses nothing: the op stays in the journal, which the next resume replays.
        try:
            action(*args)
        except (MlflowException, OSError) as exc:
            self.failures += 1
            logger.warning("MLflow write failed (%s); the sweep's journal keeps it for the next resume", exc)

    def _stage(self, op: dict[str, Any], pending: dict[str, list[Metric]]) -> None:
        run_id = self._run_of(op["trial"])
        if run_id is None:
            return
        seen = self._seen(run_id)
        for key, value in op["values"].items():
            if (key, op["step"]) not in seen:
                seen.add((key, op["step"]))
                pending.setdefault(run_id, []).append(Metric(key, float(value), int(op["ts"]), int(op["step"])))

    def _send(self, pending: dict[str, list[Metric]]) -> None:
        while pending:
            run_id, points = pending.popitem()
            for chunk in chunks(points, MAX_METRICS_PER_BATCH):
                self._client.log_batch(run_id, metrics=chunk)

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


# A niceness the kernel weighs at about a tenth of a default thread's: the writer still gets a share
# when every core is busy, so the journal's backlog drains during the sweep rather than at its end.
WRITER_NICENESS = 10


def _lower_priority() -> None:
    """Lower the calling thread's CPU priority on Linux, where niceness is per thread; elsewhere do nothing.

    (Elsewhere the call takes a process id, and a thread's id could name another process.)
    """
    if not sys.platform.startswith("linux"):
        return
    thread = threading.get_native_id()
    os.setpriority(os.PRIO_PROCESS, thread, max(os.getpriority(os.PRIO_PROCESS, thread), WRITER_NICENESS))


def _read_journal(path: Path) -> list[dict[str, Any]]:
    """The journal's ops to replay: a line cut short by a kill is dropped, and so are forgotten trials' ops."""
    if not path.is_file():
        return []
    ops = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            ops.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    forgotten = {op["trial"] for op in ops if op["op"] == "forget"}
    return [op for op in ops if op["op"] != "forget" and op["trial"] not in forgotten]
