"""How many trials a sweep runs at once, and the specs a cluster cannot run: the arithmetic, then real Ray.

The checks against GPUs run on a Ray with declared GPUs (``num_gpus``: no CUDA needed) in a process of its own,
so that the session's local Ray (``tests/conftest.py``, two CPUs and no GPU) stays as the other tests know it;
the refusal through the CLI runs on that one.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.cli.main import main
from orchestrator.resources import check_cluster, default_concurrency, shortfalls, trial_ask, trials_at_once
from orchestrator.spec import ResourcesSection, SpecError, parse_spec
from tests.conftest import REPO, tiny_spec, write_spec


def test_a_trial_asks_for_every_workers_cpus_and_gpus() -> None:
    assert trial_ask(ResourcesSection()) == {"cpus": 1.0}
    assert trial_ask(ResourcesSection(cpus=0.5, gpus=0.25, workers=4)) == {"cpus": 2.0, "gpus": 1.0}


def test_the_scarcest_resource_sets_how_many_trials_run_at_once() -> None:
    single_gpu = {"cpus": 1.0, "gpus": 1.0}
    assert trials_at_once(single_gpu, {"CPU": 16.0, "GPU": 2.0}) == 2  # GPU-bound: not 16
    assert trials_at_once({"cpus": 4.0, "gpus": 1.0}, {"CPU": 8.0, "GPU": 8.0}) == 2  # CPU-bound
    assert trials_at_once({"cpus": 3 * 0.1}, {"CPU": 0.9}) == 3  # float rounding costs no trial
    assert trials_at_once(single_gpu, {"CPU": 16.0}) == 1  # none fits yet: still one


def test_the_default_concurrency_is_computed_for_ray_train_trials_only() -> None:
    cluster = {"CPU": 4.0, "GPU": 2.0}

    def concurrency(**sections: Any) -> int | None:
        return default_concurrency(parse_spec(tiny_spec(**sections)), cluster)

    assert concurrency(resources={"gpus": 1}) == 2
    assert concurrency(resources={"workers": 2, "cpus": 1}) == 2
    assert concurrency(resources={"gpus": 1}, concurrency=3) == 3  # the spec's own
    assert concurrency(resources={"cpus": 1}) is None  # plain trials: Tune starts as many as their CPUs fit


def test_each_shortfall_names_its_field_and_what_the_cluster_has() -> None:
    resources = ResourcesSection(workers=2, cpus=2, gpus=1)
    assert shortfalls(resources, {"CPU": 2.0}) == [
        "resources.cpus: a trial asks for 4 CPUs (2 workers × 2); the cluster has 2 CPUs",
        "resources.gpus: a trial asks for 2 GPUs (2 workers × 1); the cluster has 0 GPUs",
    ]
    assert shortfalls(ResourcesSection(gpus=1), {"CPU": 1.0}) == [
        "resources.gpus: a trial asks for 1 GPU; the cluster has 0 GPUs"
    ]
    assert shortfalls(resources, {"CPU": 4.0, "GPU": 2.0}) == []


def test_a_cluster_that_can_grow_gets_a_warning_instead_of_a_refusal(caplog: pytest.LogCaptureFixture) -> None:
    spec = parse_spec(tiny_spec(resources={"gpus": 1}))
    with pytest.raises(SpecError) as refused:
        check_cluster(spec, {"CPU": 4.0}, can_grow=False)
    assert [p.split(" (")[0] for p in refused.value.problems] == [
        "resources.gpus: a trial asks for 1 GPU; the cluster has 0 GPUs"
    ]
    with caplog.at_level(logging.WARNING, logger="effsweep.resources"):
        check_cluster(spec, {"CPU": 4.0}, can_grow=True)
    (warning,) = caplog.messages
    assert warning.startswith("resources.gpus: a trial asks for 1 GPU; the cluster has 0 GPUs now")
    assert "one at a time (set concurrency" in warning


# The specs the probe below checks, with the concurrency each gets on 4 CPUs and 2 GPUs.
_SPECS = [
    (tiny_spec(resources={"gpus": 1}), 2),  # GPU-bound: the CPUs alone would take 4
    (tiny_spec(resources={"workers": 2, "cpus": 1, "gpus": 0.25}), 2),  # CPU-bound: the GPUs would take 4
    (tiny_spec(resources={"cpus": 1}), None),  # a plain Tune trial: Tune's own
    (tiny_spec(resources={"gpus": 1}, concurrency=3), 3),  # the spec's own
    (tiny_spec(resources={"workers": 2, "gpus": 2}), 1),  # asks for 4 GPUs of 2
]
_OVER_ASKING = "resources.gpus: a trial asks for 4 GPUs (2 workers × 2); the cluster has 2 GPUs"

# Ray with 4 CPUs and 2 declared GPUs, started here ("local") or joined ("joined", a cluster started beside it);
# for each spec, the concurrency and the refusal a sweep would get.
_PROBE = """
import json, sys
import ray
from ray.cluster_utils import Cluster
from orchestrator.resources import check_cluster, default_concurrency
from orchestrator.spec import SpecError, parse_spec
from orchestrator.sweep import _ray_started_here

specs, mode, out = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
shape = {"num_cpus": 4, "num_gpus": 2, "include_dashboard": False}
cluster = None
if mode == "joined":
    cluster = Cluster(initialize_head=True, head_node_args=shape)
    ray.init(address=cluster.address)
else:
    ray.init(address="local", **shape)
resources = ray.cluster_resources()
found = {"CPU": resources.get("CPU"), "GPU": resources.get("GPU"), "can_grow": not _ray_started_here()}
found["concurrency"], found["refused"] = [], []
for raw in specs:
    spec = parse_spec(raw)
    found["concurrency"].append(default_concurrency(spec, resources))
    try:
        check_cluster(spec, resources, can_grow=found["can_grow"])
        found["refused"].append(None)
    except SpecError as exc:
        found["refused"].append(exc.problems)
ray.shutdown()
if cluster is not None:
    cluster.shutdown()
with open(out, "w") as file:
    json.dump(found, file)
"""


@pytest.mark.parametrize("mode", ["local", pytest.param("joined", marks=pytest.mark.slow)])
def test_on_real_ray_with_gpus_concurrency_counts_them_and_only_a_ray_started_here_refuses(
    mode: str, tmp_path: Path
) -> None:
    out = tmp_path / "found.json"
    specs = json.dumps([raw for raw, _ in _SPECS])
    probe = subprocess.run(
        [sys.executable, "-c", _PROBE, specs, mode, str(out)], capture_output=True, text=True, timeout=600, cwd=REPO
    )
    assert probe.returncode == 0, probe.stdout[-3000:] + probe.stderr[-5000:]
    found = json.loads(out.read_text())
    assert (found["CPU"], found["GPU"]) == (4.0, 2.0)
    assert found["concurrency"] == [expected for _, expected in _SPECS]
    if mode == "local":  # this machine's Ray: nothing will add the GPUs
        assert found["can_grow"] is False
        *fitting, (refusal,) = found["refused"]
        assert fitting == [None] * (len(_SPECS) - 1) and refusal.startswith(_OVER_ASKING + " (")
    else:  # a cluster joined may have an autoscaler: the sweep is told, and waits
        assert found["can_grow"] is True
        assert found["refused"] == [None] * len(_SPECS)
        assert f"{_OVER_ASKING} now: trials wait" in probe.stderr


def test_a_spec_asking_for_gpus_the_cluster_lacks_is_refused_before_anything_is_made(
    local_ray: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_spec(tmp_path / "spec.yaml", tiny_spec(resources={"gpus": 1}))
    out = tmp_path / "out"
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["run", str(spec), "--output", str(out), "--tracking-uri", tracking]) == 2
    err = capsys.readouterr().err
    assert "resources.gpus: a trial asks for 1 GPU; the cluster has 0 GPUs (" in err
    assert "Traceback" not in err
    assert {p.name for p in out.glob("*")} <= {"effsweep.log"}  # no spec, record, trials or MLflow store
    client = MlflowClient(tracking)
    experiments = [e.experiment_id for e in client.search_experiments()]
    assert client.search_runs(experiments) == []  # no parent run was opened, so none is left RUNNING
