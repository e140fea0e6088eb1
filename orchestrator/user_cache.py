"""The user's effsweep cache: work kept across sweeps (tokens, embeddings, orders, an empty MLflow store).

``EFFSWEEP_CACHE_DIR``, else ``~/.cache/effsweep``; see ``docs/architecture.md``.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "EFFSWEEP_CACHE_DIR"


def cache_dir() -> Path:
    """The directory where per-corpus work (tokens, embeddings, orders) is cached across sweeps, made if missing.

    ``EFFSWEEP_CACHE_DIR``, else ``~/.cache/effsweep``. Cached tokens are a
    reversible copy of every corpus read, so the cache is its user's alone: the
    directory is made with mode 0700 (one of the user's that is open to others
    is narrowed to it), and ``trainables.data.prepare`` writes its files 0600.
    """
    path = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "effsweep")
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    stat = path.stat()
    if stat.st_mode & 0o077 and stat.st_uid == os.getuid():
        path.chmod(0o700)
    return path
