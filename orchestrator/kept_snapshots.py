"""Whole copies of Tune's experiment snapshot, taken each turn, so that a resume never restores a torn one.

Tune writes a snapshot (the trials, the searcher's two files, the callbacks' states) into a
staging folder, then copies it file by file, in a background thread and in place, into the
experiment's folder. A driver killed during that copy leaves a file cut short, or files of two
turns side by side; Tune then fails to restore and, rather than stop, starts the experiment over
with no trials and a searcher that has already drawn them all: the resumed sweep ends with none.
So each time Tune has written a snapshot into its staging folder (``orchestrator.snapshots``),
``SnapshotKeeper`` copies that set into a folder of its own and then points to it (one atomic
rename); ``restore_kept_snapshot`` puts the set pointed to back in place before Tune restores.
Local trial storage only: on a bucket every object appears whole. See ``docs/resume.md``.
"""

from __future__ import annotations

import itertools
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import pyarrow.fs
from ray.train._internal.storage import StorageContext
from ray.tune.callback import CallbackList
from ray.tune.execution.tune_controller import TuneController
from ray.tune.search import Searcher, SearchGenerator

# The files of one snapshot, each named after the session (the process) that wrote it.
SNAPSHOT_FILES = (
    TuneController.CKPT_FILE_TMPL, Searcher.CKPT_FILE_TMPL, SearchGenerator.CKPT_FILE_TMPL, CallbackList.CKPT_FILE_TMPL,
)  # fmt: skip
KEPT_DIR = ".effsweep-snapshots"
POINTER = "current"
REPLACED = "replaced-"  # Tune's own files, moved aside by a restore


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
        keep_snapshot(self._files, Path(storage.experiment_fs_path), next(self._kept))


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
    """Put the kept snapshot in place of Tune's own files (moved, never deleted, into the kept folder); the
    files moved aside. Nothing happens where no snapshot was kept."""
    kept = experiment / KEPT_DIR
    folder = _pointed(kept)
    if folder is None or not folder.is_dir():
        return []
    aside = kept / f"{REPLACED}{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    aside.mkdir()
    moved = []
    for path in _snapshot_files(experiment):
        moved.append(aside / path.name)
        path.rename(moved[-1])
    for path in folder.iterdir():
        shutil.copyfile(path, experiment / path.name)
    return moved


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
