"""Sweeps as Ray Jobs: submit a spec to a cluster's job server, and follow, list or stop the jobs.

``submit_sweep`` validates the spec here (a bad spec never reaches the
cluster), then submits ``effsweep run -`` as a Ray Job whose runtime
environment carries the spec's text (``EFFSWEEP_SPEC``, read from standard
input) and the settings the driver needs (tracking URI, MLflow credentials,
S3 endpoint). No working directory is shipped: trials need none, and a
job's working directory goes away with the runtime environments that use
it. The sweep directory must be a path every node of the cluster
sees the same way, or a storage URI, since the job's driver and its trials
run there, not here. Ray's token authentication stays on: the client sends
the token Ray finds (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or
``~/.ray/auth_token``) with every request.
"""

from __future__ import annotations

import os
import shlex
import time
from pathlib import Path
from typing import Any

from ray.job_submission import JobStatus, JobSubmissionClient

from orchestrator.spec import load_spec
from trainables.registry import PLUGINS_ENV

# Settings a sweep's driver reads from its environment, passed on to the job when set here.
FORWARDED_ENV = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_S3_ENDPOINT_URL",
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "EFFSWEEP_CACHE_DIR",
    PLUGINS_ENV,
)
SPEC_ENV = "EFFSWEEP_SPEC"
# The job server answers this while no node's job agent has registered yet
# (a cluster just started, or a loaded head node); it asks the client to retry.
AGENT_NOT_READY = "No available agent to submit job"
FINISHED = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}


def submit_sweep(
    spec_path: Path,
    address: str,
    *,
    output: str | None = None,
    tracking_uri: str | None = None,
    storage: str | None = None,
    name: str | None = None,
    agent_wait_s: float = 120.0,
) -> tuple[JobSubmissionClient, str]:
    """Submit the sweep in ``spec_path`` to the cluster at ``address``; returns the client and the job id.

    A cluster whose job agent is not up yet is asked again for up to
    ``agent_wait_s`` seconds; any other refusal is raised at once.
    """
    spec = load_spec(spec_path)
    target = output or str(spec.output_dir.resolve())
    command = ["effsweep", "run", "-", "--quiet", "--output", target]
    if tracking_uri:
        command += ["--tracking-uri", tracking_uri]
    if storage:
        command += ["--storage", storage]
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    env[SPEC_ENV] = spec.source
    client = JobSubmissionClient(address)
    request = {
        "entrypoint": f'printf "%s" "${SPEC_ENV}" | {shlex.join(command)}',
        "runtime_env": {"env_vars": env},
        "submission_id": name,
        "metadata": {"effsweep.spec": spec.name, "effsweep.output": target},
    }
    deadline = time.monotonic() + agent_wait_s
    while True:
        try:
            return client, client.submit_job(**request)
        except RuntimeError as refused:
            if AGENT_NOT_READY not in str(refused) or time.monotonic() >= deadline:
                raise
            time.sleep(2.0)


def wait_for_job(client: JobSubmissionClient, job_id: str, timeout: float, poll: float = 1.0) -> JobStatus:
    """Block until the job finishes (or ``timeout`` seconds pass); its last status."""
    deadline = time.monotonic() + timeout
    status = client.get_job_status(job_id)
    while status not in FINISHED and time.monotonic() < deadline:
        time.sleep(poll)
        status = client.get_job_status(job_id)
    return status


def job_rows(client: JobSubmissionClient) -> list[dict[str, Any]]:
    """Every job the cluster knows, newest first: id, status, spec and sweep directory."""
    rows = [
        {
            "job": job.submission_id or job.job_id,
            "status": str(job.status.value if hasattr(job.status, "value") else job.status),
            "spec": (job.metadata or {}).get("effsweep.spec", "-"),
            "output": (job.metadata or {}).get("effsweep.output", "-"),
            "started": job.start_time or 0,
        }
        for job in client.list_jobs()
    ]
    return sorted(rows, key=lambda r: -r["started"])
