"""Benchmark scripts run in fresh processes behind the rest of the suite, for the tests that check their output.

A test declares the run it checks with ``@pytest.mark.benchmark_run(SCRIPT, *ARGUMENTS)`` (on a
parameter set with ``pytest.param(..., marks=...)``). Such tests are moved to the end of the session,
and their runs start when the session's first test does, one at a time beside the suite: a run is
mostly one process importing, starting its own Ray or waiting on it (about 1.3 of the 2 cores busy),
so the suite's own tests fill the rest of the machine. The test then reads its run's result.

Every run gets the environment the session started with (a test's ``monkeypatch.setenv`` must not
reach it) and a Ray temporary folder of its own, so that the Ray it starts never becomes the
machine's "current cluster" that a test of its own arranged (``tests/orchestrator/test_private_ray.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

MARKER = "benchmark_run"
# A run's limit, generous for a loaded 2-core machine where it shares the cores with the suite.
RUN_TIMEOUT_S = 900
RUNS_AT_ONCE = 1

Run = tuple[str, ...]  # the script's name, then its arguments


def declared_run(item: pytest.Item) -> Run | None:
    marker = item.get_closest_marker(MARKER)
    return None if marker is None else tuple(str(arg) for arg in marker.args)


class BenchmarkRuns:
    """The session's declared runs, started in the background in the order given."""

    def __init__(self, runs: Sequence[Run], repo: Path) -> None:
        self._repo = repo
        # Short: Ray's socket paths under it must stay within the OS's 107 bytes.
        self._ray_tmp = tempfile.mkdtemp(prefix="effsweep-ray-")
        self._env = {**os.environ, "RAY_TMPDIR": self._ray_tmp}
        self._running: set[subprocess.Popen[str]] = set()
        self._pool = ThreadPoolExecutor(max_workers=RUNS_AT_ONCE)
        self._futures = {run: self._pool.submit(self._run, run) for run in dict.fromkeys(runs)}

    def result(self, item: pytest.Item) -> dict[str, Any]:
        """The JSON object the item's run printed last, once it has run to the end."""
        run = declared_run(item)
        if run is None:
            raise LookupError(f"{item.nodeid} declares no @pytest.mark.{MARKER}")
        done = self._futures[run].result()
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    def _run(self, run: Run) -> subprocess.CompletedProcess[str]:
        """``python benchmarks/SCRIPT.py ARGUMENTS`` from the repository, as the docs' commands run it."""
        script, *arguments = run
        command = [sys.executable, str(Path("benchmarks") / f"{script}.py"), *arguments]
        with subprocess.Popen(
            command, cwd=self._repo, env=self._env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
        ) as process:  # fmt: skip
            self._running.add(process)
            try:
                stdout, stderr = process.communicate(timeout=RUN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                _kill(process)
                stdout, stderr = process.communicate()
                stderr += f"\n(killed after {RUN_TIMEOUT_S} s)"
            finally:
                self._running.discard(process)
        return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)

    def close(self) -> None:
        """Stop what has not run (an interrupted session): queued runs never start, running ones are killed."""
        for future in self._futures.values():
            future.cancel()
        for process in list(self._running):
            _kill(process)
        self._pool.shutdown(wait=True)
        shutil.rmtree(self._ray_tmp, ignore_errors=True)


def _kill(process: subprocess.Popen[str]) -> None:
    """The run's whole process group: the script and what it started (its sweeps, its Ray)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
