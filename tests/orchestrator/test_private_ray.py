"""A sweep without ``--address`` runs on a Ray of its own, never on a cluster it finds on the machine.

The test process starts a real one-node cluster (``ray.cluster_utils.Cluster``,
token auth from ``tests/conftest.py``), which records itself in Ray's
``ray_current_cluster`` file as the cluster ``ray.init()`` would join. Sweeps
run through the real CLI in separate processes; the cluster's GCS tells which
drivers (jobs) and actors it has seen.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray._private.utils
from ray._raylet import GcsClient
from ray.cluster_utils import Cluster

from tests.conftest import effsweep, tiny_spec, write_spec

pytestmark = pytest.mark.slow  # a Ray cluster beside whole sweeps


@pytest.fixture(scope="module")
def other_cluster() -> Iterator[Cluster]:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


def _activity(cluster: Cluster) -> tuple[set[str], set[str]]:
    """The ids of every job (driver) and actor the cluster has ever had."""
    gcs = GcsClient(address=cluster.address)

    async def actors() -> dict:
        return await gcs.async_get_all_actor_info(timeout=60)

    jobs = gcs.get_all_job_info(timeout=60)
    return {job.hex() for job in jobs}, {actor.hex() for actor in asyncio.run(actors())}


def _sweep(tmp_path: Path, name: str) -> list[str]:
    spec = write_spec(tmp_path / f"{name}.yaml", tiny_spec(name=name, trials=1))
    return ["run", str(spec), "--output", str(tmp_path / name), "--quiet"]


def test_a_sweep_without_an_address_leaves_the_machines_cluster_alone(
    other_cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The premise: a plain ray.init() here would join this cluster.
    assert ray._private.utils.read_ray_address() == other_cluster.address
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    before = _activity(other_cluster)
    ran = effsweep(*_sweep(tmp_path, "private"))
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-5000:]
    assert (tmp_path / "private" / "results" / "trials.parquet").is_file()
    assert _activity(other_cluster) == before


def test_ray_address_in_the_environment_joins_that_cluster(
    other_cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs, actors = _activity(other_cluster)
    monkeypatch.setenv("RAY_ADDRESS", other_cluster.address)
    ran = effsweep(*_sweep(tmp_path, "joined"))
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-5000:]
    jobs_after, actors_after = _activity(other_cluster)
    assert len(jobs_after - jobs) == 1, "the sweep's driver is a job of the cluster"
    assert actors_after - actors, "its trial ran there"
