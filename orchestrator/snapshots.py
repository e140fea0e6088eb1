"""Tune experiment snapshots after every event, with the trial scheduler's state inside them.

Tune snapshots a sweep (trials, searcher, callbacks) every ten seconds or
more by default, and never the scheduler. A driver killed between two
snapshots then resumes from an older picture than the one MLflow and the
trials saw: finished trials run again, and a fresh scheduler (ASHA's rungs
empty) decides differently. Here a snapshot is written at the end of every
turn of Tune's loop, and a callback carries the scheduler's own checkpoint
(Tune's ``TrialScheduler.save``/``restore``) into it, so the searcher's, the
scheduler's and the trials' states are always taken together.
See ``docs/resume.md``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.schedulers import TrialScheduler

# Tune's period between experiment snapshots, read when its controller starts: 0 takes one every turn.
SNAPSHOT_PERIOD_ENV = "TUNE_GLOBAL_CHECKPOINT_S"


@contextmanager
def snapshot_every_step() -> Iterator[None]:
    """Within: a Tune controller started here snapshots its experiment at every turn of its loop."""
    before = os.environ.get(SNAPSHOT_PERIOD_ENV)
    os.environ[SNAPSHOT_PERIOD_ENV] = "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(SNAPSHOT_PERIOD_ENV, None)
        else:
            os.environ[SNAPSHOT_PERIOD_ENV] = before


class SchedulerSnapshot(Callback):
    """Puts ``scheduler``'s checkpoint into each experiment snapshot and restores it on resume.

    Tune pickles the callbacks and the scheduler of a sweep together, so after
    a restore this callback still holds the scheduler Tune runs. A scheduler
    without a checkpoint (FIFO) has no state to keep.
    """

    stateless = False  # set once the scheduler has said it keeps nothing: later snapshots skip asking it

    def __init__(self, scheduler: TrialScheduler) -> None:
        self.scheduler = scheduler

    def get_state(self) -> dict[str, Any] | None:
        if self.stateless:
            return None
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "scheduler"
            try:
                self.scheduler.save(str(path))
            except NotImplementedError:
                self.stateless = True
                return None
            return {"scheduler": path.read_bytes()}

    def set_state(self, state: dict[str, Any]) -> None:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "scheduler"
            path.write_bytes(state["scheduler"])
            self.scheduler.restore(str(path))
