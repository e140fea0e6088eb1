"""Every manifest in deploy/ against its real schema, and the rules the manifests must keep.

KubeRay objects against the KubeRay CRDs kept in ``../shared/schemas/kuberay``
(skipped, with the reason, where that folder is absent); core Kubernetes
objects against the Kubernetes OpenAPI schemas ``kubernetes-validate`` ships;
the cluster-launcher file against the schema inside the ``ray`` package.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import ray.autoscaler
import yaml

from tests.conftest import REPO

DEPLOY = REPO / "deploy"
CRDS = REPO.parent / "shared" / "schemas" / "kuberay"
KUBERNETES_VERSION = "1.30"
KUBERAY_FILES = sorted((DEPLOY / "kuberay").glob("*.yaml"))
CORE_FILES = sorted((DEPLOY / "mlflow").glob("*.yaml"))


def _documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _crd_schema(kind: str) -> dict[str, Any]:
    """The v1 schema of a KubeRay kind, strict as ``kubectl apply --validate=strict``: unknown fields fail."""
    path = CRDS / f"ray.io_{kind.lower()}s.yaml"
    crd = yaml.safe_load(path.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return _strict(version["schema"]["openAPIV3Schema"])


def _strict(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {k: _strict(v) for k, v in schema.items()}
    if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
        strict.setdefault("additionalProperties", False)
    return strict


@pytest.mark.parametrize("path", KUBERAY_FILES, ids=lambda p: p.name)
def test_kuberay_manifests_match_the_crds(path: Path) -> None:
    if not CRDS.is_dir():
        pytest.skip(f"{CRDS} is absent: the KubeRay CRDs are needed to validate {path.name}")
    for document in _documents(path):
        assert document["apiVersion"] == "ray.io/v1"
        jsonschema.validate(document, _crd_schema(document["kind"]))


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: p.name)
def test_kubernetes_manifests_match_the_openapi_schema(path: Path) -> None:
    for document in _documents(path):
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_a_bad_manifest_is_caught() -> None:
    # The checks above must be able to fail: a misspelt field and a wrong type.
    service = _documents(DEPLOY / "mlflow" / "mlflow.yaml")[0]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate({**service, "spec": {**service["spec"], "typo": 1}}, KUBERNETES_VERSION, True)
    if CRDS.is_dir():
        cluster = _documents(DEPLOY / "kuberay" / "raycluster.yaml")[0]
        broken = {**cluster, "spec": {**cluster["spec"], "authOptions": {"mode": "password"}}}
        with pytest.raises(jsonschema.ValidationError, match="password"):
            jsonschema.validate(broken, _crd_schema("RayCluster"))
        misspelt = {**cluster, "spec": {**cluster["spec"], "workerGroupSpec": []}}
        with pytest.raises(jsonschema.ValidationError, match="workerGroupSpec"):
            jsonschema.validate(misspelt, _crd_schema("RayCluster"))


def test_the_cluster_launcher_config_matches_rays_schema() -> None:
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    config = yaml.safe_load((DEPLOY / "cluster-launcher" / "aws-gpu.yaml").read_text())
    jsonschema.validate(config, schema)
    gpu = config["available_node_types"]["gpu_worker"]["node_config"]["InstanceType"]
    assert gpu.startswith(("g", "p")), f"the worker group must be a GPU instance type, got {gpu}"


def test_dashboards_and_job_ports_stay_inside_the_cluster() -> None:
    for path in KUBERAY_FILES:
        for document in _documents(path):
            spec = document["spec"].get("rayClusterSpec", document["spec"])
            assert spec["headGroupSpec"]["serviceType"] == "ClusterIP", path.name
            assert spec["authOptions"]["mode"] == "token", path.name
            workers = spec["workerGroupSpecs"]
            assert any("nvidia.com/gpu" in c["resources"]["limits"] for w in workers for c in _containers(w)), path
    for document in _documents(DEPLOY / "mlflow" / "mlflow.yaml"):
        if document["kind"] == "Service":
            assert document["spec"]["type"] == "ClusterIP", document["metadata"]["name"]
    launcher = yaml.safe_load((DEPLOY / "cluster-launcher" / "aws-gpu.yaml").read_text())
    assert any("--dashboard-host=127.0.0.1" in c for c in launcher["head_start_ray_commands"])


def test_the_mlflow_server_has_auth_allowed_hosts_postgres_and_s3() -> None:
    (deployment,) = [d for d in _documents(DEPLOY / "mlflow" / "mlflow.yaml") if d["kind"] == "Deployment"]
    command = " ".join(deployment["spec"]["template"]["spec"]["containers"][0]["args"])
    for flag in ("--app-name basic-auth", "--allowed-hosts", "postgresql://", "--artifacts-destination s3://"):
        assert flag in command
    secrets = _documents(DEPLOY / "mlflow" / "secrets.example.yaml")
    assert all("CHANGE-ME" in json.dumps(s["stringData"]) for s in secrets)  # placeholders, never real values


def _containers(group: dict[str, Any]) -> list[dict[str, Any]]:
    return group["template"]["spec"]["containers"]
