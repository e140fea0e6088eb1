"""Submission to a job server whose job agent is not up yet: asked again, not failed.

The server here answers as Ray's job head does (the same routes and the
same refusal text) so that Ray's own ``JobSubmissionClient`` talks to it;
the full path to a real cluster is in ``test_cluster.py``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
import ray

from orchestrator.submit import AGENT_NOT_READY, submit_sweep
from tests.conftest import tiny_spec, write_spec


class _JobHead(BaseHTTPRequestHandler):
    refusals: ClassVar[list[str]] = []
    submissions: ClassVar[list[dict]] = []

    def log_message(self, *args: object) -> None:  # keep the test output quiet
        pass

    def _answer(self, status: int, body: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def do_GET(self) -> None:
        self._answer(200, json.dumps({"version": "4", "ray_version": ray.__version__, "ray_commit": "x"}))

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.refusals:
            self._answer(500, self.refusals.pop(0))
            return
        self.submissions.append(body)
        self._answer(200, json.dumps({"job_id": "raysubmit_1", "submission_id": "raysubmit_1"}))


@pytest.fixture
def job_head() -> Iterator[tuple[str, type[_JobHead]]]:
    handler = type("JobHead", (_JobHead,), {"refusals": [], "submissions": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()


def test_a_job_agent_that_is_not_up_yet_is_asked_again(job_head, tmp_path: Path) -> None:
    address, head = job_head
    head.refusals += [f"{AGENT_NOT_READY}, please try again later."] * 2
    spec = write_spec(tmp_path / "spec.yaml", tiny_spec(trials=1))
    _, job_id = submit_sweep(spec, address, agent_wait_s=60)
    assert job_id == "raysubmit_1"
    assert not head.refusals and len(head.submissions) == 1
    assert "effsweep run - --quiet --output" in head.submissions[0]["entrypoint"]


def test_any_other_refusal_is_raised_at_once(job_head, tmp_path: Path) -> None:
    address, head = job_head
    head.refusals += ["Job with submission_id sweep already exists."]
    spec = write_spec(tmp_path / "spec.yaml", tiny_spec(trials=1))
    with pytest.raises(RuntimeError, match="already exists"):
        submit_sweep(spec, address, agent_wait_s=60)
    assert not head.submissions


def test_an_agent_that_never_comes_up_fails_after_the_wait(job_head, tmp_path: Path) -> None:
    address, head = job_head
    head.refusals += [f"{AGENT_NOT_READY}, please try again later."] * 100
    spec = write_spec(tmp_path / "spec.yaml", tiny_spec(trials=1))
    with pytest.raises(RuntimeError, match=AGENT_NOT_READY):
        submit_sweep(spec, address, agent_wait_s=0.5)
    assert not head.submissions
