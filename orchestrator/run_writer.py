"""The MLflow writes of a sweep's trials: journaled, off the driver, and idempotent.

Every write the tracking callback asks for (open a trial's child run, log a
report's metrics, finish the run) is appended to a journal in the sweep
directory first, then handed to a writer process
(``orchestrator.store_writer``) that carries it out, so neither a slow
tracking store nor the CPU its client spends holds up Tune's loop (and with
it the trials, whose ``report`` waits for the loop). Being a process, not a
thread, it never holds the driver's interpreter lock; it runs at a lower CPU
priority, so on a machine whose cores are all busy its writes wait for idle
time instead of taking it from trials on the same node. A driver killed at
any moment loses nothing: the next writer on the same journal replays it
before anything new, and replays cannot duplicate. See ``docs/resume.md``.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import queue
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from orchestrator.store_writer import OnOpen, StoreWriter, journal_line, open_journal

# A niceness the kernel weighs at about a tenth of a default process's: the writer still gets a share
# when every core is busy, so the journal's backlog drains during the sweep rather than at its end.
WRITER_NICENESS = 10


class RunWriter:
    """Journals the child runs' writes of one sweep's parent run and hands them to the writer process.

    Example:
        >>> import tempfile
        >>> from orchestrator.mlflow_runs import child_runs
        >>> folder = Path(tempfile.mkdtemp())
        >>> client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
        >>> experiment = client.create_experiment("doc")
        >>> parent = client.create_run(experiment).info.run_id
        >>> writer = RunWriter(client.tracking_uri, experiment, parent, folder / "journal.jsonl")
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
        tracking_uri: str,
        experiment_id: str,
        parent_run_id: str,
        journal: Path,
        *,
        on_open: OnOpen | None = None,
    ) -> None:
        journal.parent.mkdir(parents=True, exist_ok=True)
        replay = _read_journal(journal)
        # One write per op in append mode: the writer process appends too (the trials it forgets), and
        # the kernel never interleaves two appends; each op reaches the kernel when it is journaled, so a
        # killed driver keeps it.
        self._journal = open_journal(journal)
        # Spawned, not forked: the driver runs Ray's and Tune's threads, which a fork would copy mid-step.
        context = multiprocessing.get_context("spawn")
        self._ops: multiprocessing.Queue = context.Queue()
        self._answers: multiprocessing.Queue = context.Queue()
        self._flushes = 0
        for op in replay:
            self._ops.put(op)
        self._process = context.Process(
            target=_serve,
            args=(tracking_uri, experiment_id, parent_run_id, journal, on_open, self._ops, self._answers),
            name="effsweep-mlflow-writer",
            daemon=True,
        )
        self._process.start()

    @property
    def pid(self) -> int | None:
        """The writer process's id."""
        return self._process.pid

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
        self._ops.put({"op": "reconcile", "live": dict(live)})

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until everything asked for so far is written; whether it was in time."""
        self._flushes += 1
        self._ops.put(("flush", self._flushes))
        deadline = math.inf if timeout_s is None else time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) >= 0:
            try:
                answer = self._answers.get(timeout=min(left, 1.0))
            except queue.Empty:
                if not self._process.is_alive():
                    return False
                continue
            if answer == self._flushes:  # an earlier flush that gave up is answered first
                return True
        return False

    def close(self) -> None:
        """Write everything asked for, then stop the writer process."""
        self._ops.put(None)
        self._process.join()
        # Nothing reads the queues any more; what a dead writer left unread is in the journal.
        for channel in (self._ops, self._answers):
            channel.cancel_join_thread()
            channel.close()
        os.close(self._journal)

    def _submit(self, op: dict[str, Any]) -> None:
        os.write(self._journal, journal_line(op))
        self._ops.put(op)


def _serve(
    tracking_uri: str,
    experiment_id: str,
    parent_run_id: str,
    journal: Path,
    on_open: OnOpen | None,
    ops: multiprocessing.Queue,
    answers: multiprocessing.Queue,
) -> None:
    """The writer process: at a lower priority, apply ``ops`` to the store until told to stop."""
    os.setpriority(os.PRIO_PROCESS, 0, max(os.getpriority(os.PRIO_PROCESS, 0), WRITER_NICENESS))
    writer = StoreWriter(MlflowClient(tracking_uri), experiment_id, parent_run_id, journal, on_open)
    writer.serve(ops, answers)


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
