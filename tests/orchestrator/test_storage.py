"""Trial storage: a local folder by default, an S3-compatible bucket (a real S3 API, moto's server) on request."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import boto3
import pyarrow.fs
import pytest
from moto.server import ThreadedMotoServer

from orchestrator.layout import SweepDirError
from orchestrator.spec import parse_spec
from orchestrator.storage import TrialStorage
from orchestrator.sweep import run_sweep
from tests.conftest import tiny_spec

pytestmark = pytest.mark.slow  # an S3 server and whole sweeps


def test_storage_is_the_sweep_directory_unless_given(tmp_path: Path) -> None:
    assert TrialStorage.resolve(None, tmp_path / "tune") == TrialStorage(str(tmp_path / "tune"))
    assert TrialStorage.resolve(str(tmp_path / "shared"), tmp_path).path == str(tmp_path / "shared")
    with pytest.raises(SweepDirError, match="gs://b/x: only a local path or an s3:// URI"):
        TrialStorage.resolve("gs://b/x", tmp_path)


@pytest.fixture()
def bucket(monkeypatch: pytest.MonkeyPatch) -> Iterator[pyarrow.fs.S3FileSystem]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "effsweep-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "effsweep-test-secret")
    storage = TrialStorage.resolve("s3://sweeps/runs", Path("unused"))
    assert storage.path == "sweeps/runs" and isinstance(storage.filesystem, pyarrow.fs.S3FileSystem)
    boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1").create_bucket(Bucket="sweeps")
    yield storage.filesystem
    server.stop()


def test_a_sweep_keeps_results_and_checkpoints_in_a_bucket(
    local_ray: None, bucket: pyarrow.fs.S3FileSystem, tmp_path: Path
) -> None:
    raw = tiny_spec(
        name="in-bucket", output_dir=str(tmp_path / "in-bucket"), storage="s3://sweeps/runs",
        train={"eval_every": 20, "checkpoint_every": 2}, trials=2,
    )  # fmt: skip
    outcome = run_sweep(parse_spec(raw))
    assert (outcome.results.trials["status"] == "completed").all()
    files = [f.path for f in bucket.get_file_info(pyarrow.fs.FileSelector("sweeps/runs", recursive=True))]
    assert any("/experiment_state-" in p for p in files)
    assert 2 <= sum(p.endswith("/run.pt") for p in files) <= 4  # the last two checkpoints kept per trial
    assert not (tmp_path / "in-bucket" / "tune").exists()  # nothing of Tune's in the local folder
    again = run_sweep(parse_spec(raw))  # restored from the bucket: the same trials, nothing run twice
    assert sorted(again.results.trials["trial_id"]) == sorted(outcome.results.trials["trial_id"])
