"""Tune's experiment snapshots: taken after every change, with the trial scheduler's state inside, kept whole.

Tune snapshots a sweep (trials, searcher, callbacks) every ten seconds or
more by default, and never the scheduler. A driver killed between two
snapshots then resumes from an older picture than the one MLflow and the
trials saw: finished trials run again, and a fresh scheduler (ASHA's rungs
empty) decides differently. Here a snapshot is written at the end of every
turn of Tune's loop that changed a trial, and a callback carries the
scheduler's own checkpoint (Tune's ``TrialScheduler.save``/``restore``) into
it, so the searcher's, the scheduler's and the trials' states are always
taken together.

Tune writes a snapshot into a staging folder, then copies it file by file, in
a background thread and in place, into the experiment's folder. A driver
killed during that copy leaves a file cut short, or files of two turns side by
side; Tune then fails to restore and, rather than stop, starts the experiment
over with no trials and a searcher that has already drawn them all. So each
snapshot is also copied whole into a folder of its own, then pointed to (one
atomic rename), and ``restore_kept_snapshot`` puts the set pointed to back in
place before Tune restores. The Tuner's own file (``tuner.pkl``, written once
when the sweep starts) is copied back by a resumed driver's snapshots too, so a
whole copy of it is kept beside the sets. Local trial storage only: on a bucket every object
appears whole. See ``docs/resume.md``.
"""

from __future__ import annotations

import fnmatch
import itertools
import os
import shutil
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow.fs
from ray.train._internal.storage import StorageContext
from ray.tune import Callback
from ray.tune.callback import CallbackList
from ray.tune.execution.tune_controller import TuneController
from ray.tune.impl.tuner_internal import _TUNER_PKL
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher, SearchGenerator

# The files of one snapshot, each named after the session (the process) that wrote it.
SNAPSHOT_FILES = (
    TuneController.CKPT_FILE_TMPL, Searcher.CKPT_FILE_TMPL, SearchGenerator.CKPT_FILE_TMPL, CallbackList.CKPT_FILE_TMPL,
)  # fmt: skip
KEPT_DIR = ".effsweep-snapshots"
POINTER = "current"
TUNER_FILE = _TUNER_PKL  # the Tuner's settings: written when a sweep starts, the same bytes for its whole life
REPLACED = "replaced-"  # Tune's own files, moved aside by a restore


# Tune's period between experiment snapshots, read when its controller starts: 0 lets every turn take one.
SNAPSHOT_PERIOD_ENV = "TUNE_GLOBAL_CHECKPOINT_S"


@contextmanager
def snapshot_each_change() -> Iterator[None]:
    """Within: a Tune controller snapshots its experiment at the end of every turn of its loop that changed a
    trial or added one (and whenever Tune itself insists), and a whole copy of each snapshot is kept."""
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


class SnapshotKeeper:
    """Keeps a whole copy of each snapshot one Tune controller writes, beside its experiment."""

    def __init__(self) -> None:
        # This process's snapshot files in its staging folder, found at the first snapshot: the names stay the
        # same for the process's life, and the staging folder names the process.
        self._staging: Path | None = None
        self._files: Sequence[Path] = ()
        self._kept = itertools.count()

    def keep(self, storage: StorageContext) -> None:
        """Copy the snapshot just written to ``storage``'s staging folder (local storage only)."""
        if not isinstance(storage.storage_filesystem, pyarrow.fs.LocalFileSystem):
            return
        staging = Path(storage.experiment_driver_staging_path)
        if staging != self._staging or not self._files:
            self._staging, self._files = staging, newest_snapshot_files(staging)
        experiment = Path(storage.experiment_fs_path)
        keep_snapshot(self._files, experiment, next(self._kept))
        keep_tuner_file(staging, experiment)


def keep_tuner_file(staging: Path, experiment: Path) -> None:
    """Keep a whole copy of the Tuner's file beside the experiment, once.

    A resumed driver's Tune copies the file into its staging folder, and each of its snapshots copies it back
    in place: the staging copy is the one a kill cannot be cutting short. A new sweep's is written into the
    experiment folder alone, whole before the first snapshot.
    """
    kept = experiment / KEPT_DIR / TUNER_FILE
    if kept.is_file():
        return
    source = staging / TUNER_FILE if (staging / TUNER_FILE).is_file() else experiment / TUNER_FILE
    if source.is_file():
        _copy_atomically(source, kept)


def _copy_atomically(source: Path, target: Path) -> None:
    partial = target.with_name(f".{target.name}.{os.getpid()}")
    shutil.copyfile(source, partial)
    os.replace(partial, target)


def newest_snapshot_files(staging: Path) -> Sequence[Path]:
    """The snapshot files of the newest session (this process's) in Tune's staging folder."""
    return _session_files(staging, _newest_session(staging))


def keep_snapshot(files: Sequence[Path], experiment: Path, number: int) -> None:
    """Copy ``files`` (one snapshot) into a new kept folder beside the experiment, then point to it."""
    if not files:
        return
    kept = experiment / KEPT_DIR
    folder = kept / f"{number:09d}-{os.getpid()}"
    folder.mkdir(parents=True, exist_ok=True)
    for path in files:
        shutil.copyfile(path, folder / path.name)
    pointer = kept / f".{POINTER}.{os.getpid()}"
    pointer.write_text(folder.name)
    os.replace(pointer, kept / POINTER)  # the switch: before it the old set is current, after it the new one
    for old in kept.iterdir():  # sets no longer pointed to, and any a killed process left half-copied
        if old.is_dir() and old != folder and not old.name.startswith(REPLACED):
            shutil.rmtree(old, ignore_errors=True)


def restore_kept_snapshot(experiment: Path) -> list[Path]:
    """Put the kept snapshot and Tuner file in place of Tune's own files (moved, never deleted, into the kept
    folder); the files moved aside. Nothing happens where nothing was kept."""
    kept = experiment / KEPT_DIR
    folder = _pointed(kept)
    copies = sorted(folder.iterdir()) if folder is not None and folder.is_dir() else []
    replaced = _snapshot_files(experiment) if copies else []
    if (kept / TUNER_FILE).is_file():
        copies.append(kept / TUNER_FILE)
        replaced += [p for p in [experiment / TUNER_FILE] if p.is_file()]
    if not copies:
        return []
    aside = kept / f"{REPLACED}{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    aside.mkdir(parents=True)
    moved = []
    for path in replaced:
        moved.append(aside / path.name)
        path.rename(moved[-1])
    for path in copies:
        shutil.copyfile(path, experiment / path.name)
    return moved


def has_tune_snapshot(experiment: str, filesystem: pyarrow.fs.FileSystem | None = None) -> bool:
    """Whether Tune has snapshotted the experiment at ``experiment`` (on ``filesystem``, else local) at least once.

    Tune writes its Tuner's file when a sweep starts, and its first snapshot at the end of the turn that adds
    the first trial. Restoring a driver killed between the two, Tune finds no snapshot and starts an
    experiment of its own without the spec's fixed settings (it does not keep them), and every trial fails;
    with nothing to restore, the sweep starts afresh instead.
    """
    selector = pyarrow.fs.FileSelector(experiment, allow_not_found=True)
    listed = (filesystem or pyarrow.fs.LocalFileSystem()).get_file_info(selector)
    pattern = TuneController.CKPT_FILE_TMPL.format("*")
    return any(fnmatch.fnmatch(Path(info.path).name, pattern) for info in listed)


def _pointed(kept: Path) -> Path | None:
    try:
        return kept / (kept / POINTER).read_text().strip()
    except FileNotFoundError:
        return None


def _snapshot_files(folder: Path) -> list[Path]:
    return sorted(p for template in SNAPSHOT_FILES for p in folder.glob(template.format("*")))


def _newest_session(folder: Path) -> str | None:
    prefix, suffix = TuneController.CKPT_FILE_TMPL.split("{}")
    sessions = [p.name.removeprefix(prefix).removesuffix(suffix) for p in folder.glob(prefix + "*" + suffix)]
    return max(sessions, default=None)


def _session_files(folder: Path, session: str | None) -> Sequence[Path]:
    if session is None:
        return []
    return [folder / t.format(session) for t in SNAPSHOT_FILES if (folder / t.format(session)).is_file()]
