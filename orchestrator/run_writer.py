"""The MLflow writes of a sweep's trials: journaled, off the driver, and idempotent.

Every write the tracking callback asks for (open a trial's child run, log a
report's metrics, finish the run) is appended to a journal in the sweep
directory first, then handed to a writer process
(``orchestrator.store_writer``) that carries it out, so neither a slow
tracking store nor the CPU its client spends holds up Tune's loop (and with
it the trials, whose ``report`` waits for the loop). Being a process, not a
thread, it never holds the driver's interpreter lock; it lowers its priority
before it imports anything, and it sends metric points in batches gathered
over a few seconds, so on a machine whose cores are all busy it takes little
from trials on the same node and still keeps MLflow current. A driver killed
at any moment loses nothing: the next writer on the same journal replays it
before anything new, and replays cannot duplicate. See ``docs/resume.md``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import queue
import select
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from orchestrator.store_writer import OnOpen, WriterSetup, journal_line, open_journal

# The writer's niceness: the kernel weighs it at about a tenth of a default process's, so beside busy trials it
# gets a small share of a core, enough for its batches. Not Linux's idle class: where trials keep every core
# busy that starves it until the sweep ends (MLflow shows nothing meanwhile), and a switch into the class by
# the starting writer can race the driver's switch out of it when a short sweep closes.
WRITER_NICENESS = 10

# The writer process's whole program before its imports: a fresh interpreter (not multiprocessing's spawn,
# which would re-import the driver's ``__main__`` and its imports at full priority) that lowers its
# priority first. Its arguments: the niceness and the descriptor its answers go to. Once it has served, every
# write is committed and its answers are closed: it leaves at once, since tearing down an interpreter that has
# imported MLflow takes about a second of CPU (measured here), which the sweep's end would wait for.
_WRITER_MAIN = """
import os, sys
os.setpriority(os.PRIO_PROCESS, 0, max(os.getpriority(os.PRIO_PROCESS, 0), int(sys.argv[1])))
import pickle
setup = pickle.load(sys.stdin.buffer)
sys.path[:] = setup.sys_path
from orchestrator.store_writer import serve_stream
serve_stream(setup, sys.stdin.buffer, int(sys.argv[2]))
sys.stderr.flush()
os._exit(0)
"""


class RunWriter:
    """Journals the child runs' writes of one sweep's parent run and hands them to the writer process.

    Example:
        >>> import tempfile
        >>> from mlflow.tracking import MlflowClient
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
        answers, answers_for_writer = os.pipe()
        # A plain fork and exec (no code of ours runs between them), which is safe beside Ray's and Tune's threads.
        self._process = subprocess.Popen(
            [sys.executable, "-c", _WRITER_MAIN, str(WRITER_NICENESS), str(answers_for_writer)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            pass_fds=(answers_for_writer,),
        )
        os.close(answers_for_writer)
        self._answers = answers
        self._answered = b""
        self._flushes = 0
        # A feeder thread writes to the pipe, so a writer that is slow to read never blocks a caller.
        self._ops: queue.Queue = queue.Queue()
        self._ops.put(WriterSetup(tracking_uri, experiment_id, parent_run_id, journal, on_open, list(sys.path)))
        for op in replay:
            self._ops.put(op)
        self._feeder = threading.Thread(
            target=_feed, args=(self._ops, self._process.stdin), name="effsweep-mlflow-feeder", daemon=True
        )
        self._feeder.start()

    @property
    def pid(self) -> int:
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
            if not select.select([self._answers], [], [], min(left, 1.0))[0]:
                if self._process.poll() is not None:
                    return False
                continue
            chunk = os.read(self._answers, 4096)
            if not chunk:  # the writer exited
                return False
            *lines, self._answered = (self._answered + chunk).split(b"\n")
            if lines and int(lines[-1]) == self._flushes:  # an earlier flush that gave up is answered first
                return True
        return False

    def close(self) -> None:
        """Write everything asked for, then stop the writer process."""
        self._ops.put(None)
        self._feeder.join()
        self._process.wait()
        os.close(self._answers)
        os.close(self._journal)

    def _submit(self, op: dict[str, Any]) -> None:
        os.write(self._journal, journal_line(op))
        self._ops.put(op)


def _feed(ops: queue.Queue, stream: IO[bytes]) -> None:
    """Pickle ``ops`` into the writer's input until ``None``, which goes too and closes it."""
    try:
        while True:
            item = ops.get()
            pickle.dump(item, stream)
            stream.flush()
            if item is None:
                break
    except BrokenPipeError:
        pass  # the writer died: what it did not take is in the journal
    finally:
        with contextlib.suppress(BrokenPipeError):
            stream.close()


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
