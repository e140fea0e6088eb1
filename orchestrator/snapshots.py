"""Tune experiment snapshots after every change, with the trial scheduler's state inside them.

Tune snapshots a sweep (trials, searcher, callbacks) every ten seconds or
more by default, and never the scheduler. A driver killed between two
snapshots then resumes from an older picture than the one MLflow and the
trials saw: finished trials run again, and a fresh scheduler (ASHA's rungs
empty) decides differently. Here a snapshot is written at the end of every
turn of Tune's loop that changed a trial, and a callback carries the scheduler's own checkpoint
(Tune's ``TrialScheduler.save``/``restore``) into it, so the searcher's, the
scheduler's and the trials' states are always taken together.
See ``docs/resume.md``.
"""

from __future__ import annotations

import os
import tempfile
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.execution.tune_controller import TuneController
from ray.tune.schedulers import TrialScheduler

from orchestrator.kept_snapshots import SnapshotKeeper

# Tune's period between experiment snapshots, read when its controller starts: 0 lets every turn take one.
SNAPSHOT_PERIOD_ENV = "TUNE_GLOBAL_CHECKPOINT_S"


@contextmanager
def snapshot_each_change() -> Iterator[None]:
    """Within: a Tune controller snapshots its experiment at the end of every turn of its loop that changed a
    trial or added one (and whenever Tune itself insists), and a whole copy of each snapshot is kept
    (``orchestrator.kept_snapshots``)."""
    before = os.environ.get(SNAPSHOT_PERIOD_ENV)
    os.environ[SNAPSHOT_PERIOD_ENV] = "0"  # Tune's own period lets every turn through; the turn's changes decide
    original = TuneController.checkpoint
    TuneController.checkpoint = _on_change(original)  # type: ignore[method-assign]
    try:
        yield
    finally:
        TuneController.checkpoint = original  # type: ignore[method-assign]
        if before is None:
            os.environ.pop(SNAPSHOT_PERIOD_ENV, None)
        else:
            os.environ[SNAPSHOT_PERIOD_ENV] = before


def _on_change(checkpoint: Callable[..., None]) -> Callable[..., None]:
    """``TuneController.checkpoint`` that skips a turn which changed no trial.

    Most turns change nothing: Tune's loop waits at most 0.1 s for an event, so while trials train it
    turns about ten times a second, and a snapshot (every trial's state, the searcher's and the callbacks'
    pickles, then a copy into the experiment folder) on each of those turns takes CPU from the trials on
    a loaded node. Everything a snapshot holds changes only with a trial: a result, a status, a new trial
    (the searcher suggested one), a failure. Tune keeps each trial's state as JSON that it rebuilds only
    after a change, so comparing those strings (the same objects when nothing changed) finds the turns
    that changed something.
    """
    written: weakref.WeakKeyDictionary[TuneController, list[tuple[str, str]]] = weakref.WeakKeyDictionary()
    keepers: weakref.WeakKeyDictionary[TuneController, SnapshotKeeper] = weakref.WeakKeyDictionary()

    def on_change(controller: TuneController, force: bool = False, wait: bool = False) -> None:
        trials = controller.get_trials()
        states = [trial.get_json_state() for trial in trials]
        if not force and written.get(controller) == states:
            return
        checkpoint(controller, force=force, wait=wait)
        written[controller] = states
        if trials:
            keepers.setdefault(controller, SnapshotKeeper()).keep(trials[0].storage)

    return on_change


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
