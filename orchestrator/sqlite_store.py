"""New SQLite MLflow stores, made whole before anyone opens them, from an empty store kept in the user's cache.

MLflow makes a new SQLite store's tables with a chain of schema migrations (about 2 s of CPU, more
on a loaded machine, at the start of every sweep), and a process killed during them leaves a store
that no later migration can finish ("table ... already exists"). So the first new store of an
MLflow version is migrated once into the user's cache (``orchestrator.user_cache``), and every new
store is a copy of it, given its own "Default" experiment row, written beside its place and renamed
there once complete. See ``docs/architecture.md``.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from pathlib import Path

import mlflow
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from mlflow.utils.uri import append_to_uri_path

from orchestrator.user_cache import cache_dir

# The one row a new store holds that depends on where it is and when it was made.
DEFAULT_EXPERIMENT_ID = 0


def create_sqlite_store(path: Path) -> None:
    """Make the SQLite store at ``path`` (which must not exist), as MLflow would with ``path``'s folder as its
    default artifact root."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = _partial(path)
    shutil.copyfile(empty_store(), partial)
    now_ms = int(time.time() * 1000)
    with sqlite3.connect(partial) as db:
        db.execute(
            "UPDATE experiments SET artifact_location = ?, creation_time = ?, last_update_time = ? "
            "WHERE experiment_id = ?",
            (append_to_uri_path(path.parent.as_uri(), str(DEFAULT_EXPERIMENT_ID)), now_ms, now_ms,
             DEFAULT_EXPERIMENT_ID),
        )  # fmt: skip
    db.close()
    os.replace(partial, path)


def empty_store() -> Path:
    """The cached empty store of this MLflow version, migrated here the first time it is asked for."""
    path = cache_dir() / f"mlflow-{mlflow.__version__}-empty.db"
    if not path.exists():
        partial = _partial(path)
        store = SqlAlchemyStore(f"sqlite:///{partial}", partial.parent.as_uri())  # makes every table
        store.engine.dispose()
        partial.chmod(0o600)
        os.replace(partial, path)  # atomic: a process beside this one sees no store or a whole one
    return path


def _partial(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.partial")
