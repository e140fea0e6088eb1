"""Carries a multi-worker trial's Ray Train reports to its Tune trial without the hang of Ray's own callback.

Ray 2.60's ``TuneReportCallback`` queues each report for the Tune function trainable's main thread, which
puts it into the trial's one-slot result queue, a queue that same thread is the only one to read. When
the Train run's last report is still queued as ``fit()`` returns (Tune slow to take results: a busy
machine, a slow callback), the trial's runner thread fills that slot with its end-of-function marker
first, and the main thread then waits on the full slot forever: the sweep hangs after the trial. Here the
Train controller puts each report on a queue actor and a thread of the trial's driver reports it with
``tune.report``, as a trial function does, and the driver returns only once every report is taken. See
docs/architecture.md.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ray.train import Checkpoint
from ray.train.v2.api.callback import UserCallback
from ray.util.queue import Empty, Queue

# The key Ray's own callback gives a report's checkpoint under: Ray Train has already stored it.
CHECKPOINT_PATH_KEY = "checkpoint_path"
# How often the relay looks whether the run has ended while no report arrives.
POLL_S = 0.2


class ReportsToQueue(UserCallback):
    """A Ray Train callback that puts rank 0's metrics of every report on ``queue`` (waiting while it is full)."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Checkpoint | None) -> None:
        report = dict(metrics[0])
        if checkpoint is not None:
            report[CHECKPOINT_PATH_KEY] = checkpoint.path
        self.queue.put(report)


def fit_and_relay(fit: Callable[[], Any], queue: Queue, report: Callable[[dict[str, Any]], None]) -> Any:
    """``fit()``, while a thread passes what arrives on ``queue`` to ``report``; returns once every report is passed.

    The queue is the one given to ``ReportsToQueue`` in ``fit``'s run. An error of ``fit`` or of ``report``
    (Tune's ``SystemExit`` when it stops the trial included) is raised here, after the reports before it.
    """
    ended = threading.Event()
    failed: list[BaseException] = []
    relay = threading.Thread(target=_relay, args=(queue, ended, report, failed), name="train-report-relay", daemon=True)
    relay.start()
    try:
        result = fit()
    finally:
        ended.set()
        relay.join()
    if failed:
        raise failed[0]
    return result


def _relay(queue: Queue, ended: threading.Event, report: Callable[[dict[str, Any]], None], failed: list) -> None:
    try:
        while True:
            try:
                item = queue.get(timeout=POLL_S)
            except Empty:
                # ``fit()`` returns only after its run's last put has returned, so once it has ended an empty
                # queue stays empty.
                if ended.is_set() and queue.empty():
                    return
                continue
            report(item)
    except BaseException as error:  # Tune stops a trial by raising SystemExit in whatever reports
        failed.append(error)
