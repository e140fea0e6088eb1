"""Sweeps on a real multi-node Ray cluster started on this machine: a head and two worker nodes.

The cluster (``ray.cluster_utils.Cluster``: every node its own raylet and
object store, in its own processes) runs with token authentication, the
session's token (``tests/conftest.py``) given to it and to every client
through ``RAY_AUTH_TOKEN``. Sweeps
run in separate ``effsweep`` processes, as a user runs them: submitted as
Ray Jobs, or joining the cluster with ``--address``, so a test can kill a
driver or a node without touching the test process.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import crash
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from ray.cluster_utils import Cluster

from orchestrator.layout import SweepLayout, SweepRecord
from orchestrator.mlflow_runs import TRIAL_ID_TAG
from orchestrator.store_writer import STATUS_TAG
from tests.conftest import EFFSWEEP, REPO, tiny_spec, write_spec

pytestmark = pytest.mark.slow  # real multi-node Ray clusters

FINAL_STATUSES = {"completed", "pruned", "diverged", "error"}


@dataclass
class RealCluster:
    cluster: Cluster
    env: dict[str, str]
    gcs_address: str
    job_address: str

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*EFFSWEEP, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO, env=self.env
        )

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*EFFSWEEP, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
            env=self.env, start_new_session=True,
        )  # fmt: skip


@pytest.fixture(scope="module")
def real_cluster() -> Iterator[RealCluster]:
    # The token and auth mode come from conftest, for the nodes and every client alike. Nodes run
    # trials and jobs with this machine's effsweep, as an image would have it on PATH.
    assert os.environ["RAY_AUTH_MODE"] == "token" and os.environ["RAY_AUTH_TOKEN"]
    bin_dir = str(Path(sys.executable).parent)
    saved_path = os.environ["PATH"]
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{saved_path}"
    dashboard_port = _free_port()
    try:
        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 0, "include_dashboard": True, "dashboard_port": dashboard_port,
                # Ray's fixed default (52365) is taken by any other Ray on this machine, and an agent
                # that cannot bind serves no jobs: the job server then refuses every submission.
                "dashboard_agent_listen_port": _free_port(),
            },
        )  # fmt: skip
        for _ in range(2):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
    finally:
        os.environ["PATH"] = saved_path
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PATH"] = f"{bin_dir}{os.pathsep}{saved_path}"
    holder = RealCluster(cluster, env, cluster.address, f"http://127.0.0.1:{dashboard_port}")
    _wait_for_job_server(holder)
    yield holder
    cluster.shutdown()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_job_server(cluster: RealCluster, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = cluster.run("jobs", "list", "--address", cluster.job_address, timeout=60)
        if listed.returncode == 0:
            return
        time.sleep(1)
    raise AssertionError(f"the job server at {cluster.job_address} did not come up: {listed.stderr}")


def _cluster_spec(tmp_path: Path, name: str, trials: int, budget: float = 40960) -> Path:
    raw = tiny_spec(
        name=name,
        output_dir=str(tmp_path / name),
        budget={"compute": budget},
        search={"peak_lr": {"choice": [1e-3, 2e-3, 3e-3, 5e-3, 7e-3, 1e-2][:trials]}},
        searcher="grid",
        trials=None,
        concurrency=2,
    )
    return write_spec(tmp_path / f"{name}.yaml", raw)


def _child_runs(sweep_dir: Path) -> pd.DataFrame:
    """Every MLflow child run of the sweep: trial id and status tag, one row per run."""
    record = SweepRecord.load(SweepLayout(sweep_dir))
    client = MlflowClient(record.tracking_uri)
    parent = f"tags.mlflow.parentRunId = '{record.parent_run_id}'"
    runs = client.search_runs([record.experiment_id], filter_string=parent)
    rows = [{"trial": r.data.tags.get(TRIAL_ID_TAG), "status": r.data.tags.get(STATUS_TAG)} for r in runs]
    return pd.DataFrame(rows, columns=["trial", "status"])


def _assert_every_trial_once_and_final(sweep_dir: Path, trials: int) -> None:
    results = pd.read_parquet(sweep_dir / "results" / "trials.parquet")
    assert len(results) == trials and results["trial_id"].is_unique
    assert set(results["status"]) <= FINAL_STATUSES and (results["status"] == "completed").all()
    runs = _child_runs(sweep_dir)
    assert sorted(runs["trial"]) == sorted(results["trial_id"]), "one child run per trial, none duplicated"
    assert set(runs["status"]) <= FINAL_STATUSES
    bookkeeping = crash.outcome(sweep_dir)
    assert bookkeeping["duplicate_metric_rows"] == 0 and bookkeeping["orphaned_runs"] == 0


def test_a_submitted_sweep_runs_as_a_job_and_completes(real_cluster: RealCluster, tmp_path: Path) -> None:
    spec = _cluster_spec(tmp_path, "submitted", trials=2)
    submitted = real_cluster.run("submit", str(spec), "--address", real_cluster.job_address, "--wait")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    assert "Job " in submitted.stdout and "SUCCEEDED" in submitted.stdout
    _assert_every_trial_once_and_final(tmp_path / "submitted", 2)
    listed = real_cluster.run("jobs", "list", "--address", real_cluster.job_address)
    assert "submitted" in listed.stdout and "SUCCEEDED" in listed.stdout


def test_a_bad_spec_is_refused_before_it_reaches_the_cluster(real_cluster: RealCluster, tmp_path: Path) -> None:
    bad = write_spec(tmp_path / "bad.yaml", tiny_spec(trials=0))
    refused = real_cluster.run("submit", str(bad), "--address", real_cluster.job_address)
    assert refused.returncode == 2 and "trials" in refused.stderr


def test_a_killed_driver_is_resumed_without_losing_or_duplicating_trials(
    real_cluster: RealCluster, tmp_path: Path
) -> None:
    # Trials long enough that the sweep is still running when MLflow shows two of them completed (two
    # at a time: four are left to run, or running).
    spec = _cluster_spec(tmp_path, "killed-driver", trials=6, budget=81920)
    sweep_dir = tmp_path / "killed-driver"
    driver = real_cluster.start("run", str(spec), "--address", real_cluster.gcs_address)
    _wait_until(lambda: _completed_runs(sweep_dir) >= 2, driver, timeout=300)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    assert _completed_runs(sweep_dir) < 6, "the driver must die mid-sweep for this test to mean anything"
    resumed = real_cluster.run("resume", str(sweep_dir), "--address", real_cluster.gcs_address)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    _assert_every_trial_once_and_final(sweep_dir, 6)


def test_a_lost_worker_node_costs_no_trial(real_cluster: RealCluster, tmp_path: Path) -> None:
    spec = _cluster_spec(tmp_path, "lost-node", trials=4, budget=81920)
    sweep_dir = tmp_path / "lost-node"
    driver = real_cluster.start("run", str(spec), "--address", real_cluster.gcs_address)
    _wait_until(lambda: _running_runs(sweep_dir) >= 2, driver, timeout=300)
    victim = next(iter(real_cluster.cluster.worker_nodes))
    real_cluster.cluster.remove_node(victim, allow_graceful=False)
    output, _ = driver.communicate(timeout=600)
    real_cluster.cluster.add_node(num_cpus=1)  # the next test gets two workers again
    assert driver.returncode == 0, output
    _assert_every_trial_once_and_final(sweep_dir, 4)


def _completed_runs(sweep_dir: Path) -> int:
    return _runs_with(sweep_dir, {"completed"})


def _running_runs(sweep_dir: Path) -> int:
    return _runs_with(sweep_dir, None)


def _runs_with(sweep_dir: Path, statuses: set[str] | None) -> int:
    if not (sweep_dir / "sweep.json").is_file():
        return 0
    try:
        runs = _child_runs(sweep_dir)
    except Exception:  # the store is being created by the driver; ask again
        return 0
    if runs.empty:
        return 0
    return len(runs) if statuses is None else int(runs["status"].isin(statuses).sum())


def _wait_until(condition: Any, driver: subprocess.Popen[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if driver.poll() is not None:
            raise AssertionError(f"the driver ended early ({driver.returncode}): {driver.stdout.read()}")
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError("timed out waiting for the sweep")


def test_a_two_worker_ddp_trial_matches_one_worker(real_cluster: RealCluster, tmp_path: Path) -> None:
    # Same seed, same global batch (8): the two workers each train on half of every batch and average
    # their gradients, so the run is the one-worker run up to the order of floating-point sums.
    finals, workers, gns = {}, {}, {}
    for count in (1, 2):
        name = f"ddp-{count}"
        raw = tiny_spec(
            name=name, output_dir=str(tmp_path / name), search={"seed": {"choice": [0]}}, searcher="grid",
            trials=None, train={"eval_every": 20, "batch_size": 8, "schedule.name": "cosine", "checkpoint_every": 2,
                   "gns": True},
            resources={"cpus": 1, "workers": count},
        )  # fmt: skip
        ran = real_cluster.run(
            "run", str(write_spec(tmp_path / f"{name}.yaml", raw)), "--address", real_cluster.gcs_address
        )
        assert ran.returncode == 0, ran.stdout + ran.stderr
        trials = pd.read_parquet(tmp_path / name / "results" / "trials.parquet")
        metrics = pd.read_parquet(tmp_path / name / "results" / "metrics.parquet")
        finals[count] = float(trials["final_val_loss"].iloc[0])
        workers[count] = float(metrics["workers"].dropna().iloc[0])
        gns[count] = float(metrics["gns"].dropna().iloc[-1])
    assert workers == {1: 1.0, 2: 2.0}
    assert all(gns[count] > 0 for count in (1, 2))  # measured across workers too (all-reduced gradients)
    assert finals[2] == pytest.approx(finals[1], rel=1e-4)
    assert (tmp_path / "ddp-2" / "tune" / "train").is_dir()  # the Ray Train runs, one per trial
    assert list((tmp_path / "ddp-2" / "tune" / "train").glob("**/run.pt"))  # rank 0 checkpoints the trial
