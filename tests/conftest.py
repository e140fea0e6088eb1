"""Shared fixtures: isolated caches, tiny specs on a real corpus, one real end-to-end sweep."""

from __future__ import annotations

import copy
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.benchmark_runs import BenchmarkRuns, declared_run
from trainables.data.prepare import SweepData, prepare_sweep_data

# Token authentication on, as Ray 2.60 sets it up for new clusters, with one token for every Ray
# the session starts (the local one, the multi-node cluster) and every process it runs. Set before
# anything imports ray: a process reads its auth mode once.
os.environ["RAY_AUTH_MODE"] = "token"
os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
os.environ.pop("RAY_AUTH_TOKEN_PATH", None)

REPO = Path(__file__).resolve().parent.parent
# The benchmarks' kill-and-resume harness (benchmarks/crash.py) serves the resume tests too; benchmark
# scripts import each other as top-level modules from their own folder.
sys.path.insert(0, str(REPO / "benchmarks"))
# The installed console script, as a user runs it.
_SCRIPT = Path(sys.executable).with_name("effsweep")
EFFSWEEP = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "orchestrator.cli"]

# A sweep small enough for CI: the tiny model, 80 steps at batch 8, on a corpus gensim ships.
TINY_SPEC: dict[str, Any] = {
    "name": "tiny",
    "data": {"corpus": "gensim:lee_background", "val_fraction": 0.1, "eval_tokens": 2048},
    "model": {"size": "tiny"},
    "budget": {"compute": 40960},
    "train": {"eval_every": 20},
    "search": {
        "schedule.name": {"choice": ["cosine", "wsd"]},
        "peak_lr": {"loguniform": [1.0e-3, 1.0e-2]},
        "batch_size": {"choice": [8, 16]},
        "schedule.decay_frac": {"uniform": [0.1, 0.3], "when": {"schedule.name": "wsd"}},
    },
    "searcher": {"name": "random", "seed": 0},
    "scheduler": "fifo",
    "trials": 4,
}


# Trial settings of a model small enough for tests of the training loop, on 32-token windows.
TINY_32 = {"model.seq_len": 32, "model.n_layer": 2, "model.n_head": 2, "model.d_model": 32}


@pytest.fixture(scope="session")
def lee32(tmp_path_factory: pytest.TempPathFactory) -> SweepData:
    """Gensim's Lee corpus, prepared for ``TINY_32`` trials."""
    return prepare_sweep_data(
        "gensim:lee_background", val_fraction=0.1, seed=0, seq_len=32, eval_tokens=2048,
        cache_dir=tmp_path_factory.mktemp("cache32"),
    )  # fmt: skip


def tiny_spec(**overrides: Any) -> dict[str, Any]:
    """TINY_SPEC with top-level sections replaced (``None`` removes one)."""
    spec = copy.deepcopy(TINY_SPEC)
    for key, value in overrides.items():
        if value is None:
            spec.pop(key, None)
        else:
            spec[key] = value
    return spec


def write_spec(path: Path, spec: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def effsweep(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a fresh process (its own local Ray), as a user would."""
    return subprocess.run([*EFFSWEEP, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)


@pytest.fixture(scope="session", autouse=True)
def isolated_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep caches and MLflow stores out of the user's home and any configured server."""
    saved = {k: os.environ.get(k) for k in ("EFFSWEEP_CACHE_DIR", "MLFLOW_TRACKING_URI")}
    os.environ["EFFSWEEP_CACHE_DIR"] = str(tmp_path_factory.mktemp("effsweep-cache"))
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests of benchmark runs last: their runs go on beside the rest of the suite (``tests.benchmark_runs``)."""
    items.sort(key=lambda item: declared_run(item) is not None)  # stable: each group keeps its order


@pytest.fixture(scope="session", autouse=True)
def benchmark_runs(request: pytest.FixtureRequest, isolated_environment: None) -> Iterator[BenchmarkRuns]:
    """The runs the session's tests declare, started now, in the background, with the session's environment."""
    runs = [run for item in request.session.items if (run := declared_run(item)) is not None]
    background = BenchmarkRuns(runs, REPO)
    yield background
    background.close()


@pytest.fixture(scope="session")
def local_ray() -> Iterator[None]:
    """One local Ray for the in-process sweeps of the session (token auth on, Ray's default)."""
    import logging

    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.ERROR)
    yield
    ray.shutdown()


class Sweep:
    """A finished sweep: its directory, the CLI's output, and its spec."""

    def __init__(self, root: Path, spec_path: Path, process: subprocess.CompletedProcess[str]) -> None:
        self.root = root
        self.spec_path = spec_path
        self.process = process


@pytest.fixture(scope="session")
def e2e_sweep(tmp_path_factory: pytest.TempPathFactory) -> Sweep:
    """A 4-trial sweep run through ``effsweep run``, shared by the tests that inspect it."""
    base = tmp_path_factory.mktemp("e2e")
    spec_path = write_spec(base / "spec.yaml", tiny_spec(name="e2e"))
    root = base / "sweep"
    process = effsweep("run", str(spec_path), "--output", str(root), "--quiet")
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-5000:]
    return Sweep(root, spec_path, process)
