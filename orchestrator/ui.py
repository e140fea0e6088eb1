"""``effsweep ui``: serve the MLflow UI on a sweep's store, or point at the server it logs to.

The server (``mlflow server``, which runs uvicorn as a child) gets a session, and so a process
group, of its own: when ``effsweep ui`` stops, on SIGINT, SIGTERM or any other way out, the whole
group gets SIGTERM, then SIGKILL if anything is left after a grace period. On Linux the server also
gets SIGTERM from the kernel if ``effsweep ui`` dies without a chance to stop it (SIGKILL).
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from types import FrameType

from orchestrator.layout import SweepLayout, SweepRecord

# Without it MLflow 3 opens experiments in its GenAI view; the sweep's runs belong in "Model training".
TRAINING_VIEW = "workflowType=machine_learning"
# Long enough for uvicorn to close its connections; short enough that a stopped UI frees its port at once.
STOP_GRACE_S = 3.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


class Stopped(BaseException):
    """SIGINT or SIGTERM asked ``effsweep ui`` to stop (a BaseException, as KeyboardInterrupt is, so that
    no ``except Exception`` on the way swallows it)."""


def run_url(base: str, record: SweepRecord) -> str:
    """The UI page of the sweep's parent run, where its child runs are listed."""
    return f"{base.rstrip('/')}/#/experiments/{record.experiment_id}/runs/{record.parent_run_id}?{TRAINING_VIEW}"


def experiment_url(base: str, record: SweepRecord) -> str:
    """The experiment's runs table in the model-training view, where the parent run lists its trials."""
    return f"{base.rstrip('/')}/#/experiments/{record.experiment_id}/runs?{TRAINING_VIEW}"


def is_served(uri: str) -> bool:
    """Whether a tracking URI is already an MLflow server (nothing for us to start)."""
    return uri.startswith(("http://", "https://", "databricks"))


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_until_ready(base: str, process: subprocess.Popen, timeout_s: float) -> None:
    """Block until the server answers its health check; fail if it exits or never answers."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the MLflow server exited with code {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the MLflow server at {base} did not answer within {timeout_s:.0f} s")


def start_server(command: list[str]) -> subprocess.Popen:
    """Start ``command`` as the leader of a new session, its group the server's processes and no others."""
    # MLflow's job runner (seven huey consumers) serves GenAI judges and trace rollups, which a sweep's
    # UI never asks for.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    return subprocess.Popen(command, env=env, start_new_session=True, preexec_fn=_die_with(os.getpid()))


def _die_with(parent: int) -> Callable[[], None] | None:
    """On Linux, a hook that has the child get SIGTERM when ``parent`` dies, even by SIGKILL.

    SIGTERM, not SIGKILL: ``mlflow server`` handles it by passing it on to its uvicorn, which a
    SIGKILL would leave serving the port. (The kernel sends it when the thread that started the
    child ends: ``effsweep ui`` starts the server from its main thread.)
    """
    if sys.platform != "linux":
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the hook runs between fork and exec

    def hook() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the request took effect
            os._exit(1)

    return hook


def stop_server(process: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM to the server's process group; SIGKILL to what is left of it once the leader exits, or after ``grace_s``.

    The leader is reaped last: until then its pid, the group's id, cannot be taken by another process,
    so neither signal can reach anyone else's group.
    """
    if process.returncode is not None:
        return  # reaped already: the group's id may be someone else's by now
    os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and not _has_exited(process.pid):
        time.sleep(0.05)
    # Once the leader has exited (it waits for its uvicorn), this only reaches stragglers.
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _has_exited(pid: int) -> bool:
    """Whether the child ``pid`` has exited, leaving it unreaped."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _stop(signum: int, frame: FrameType | None) -> None:
    raise Stopped(signum)


def serve_ui(layout: SweepLayout, host: str = "127.0.0.1", port: int | None = None, timeout_s: float = 120) -> int:
    """Serve the UI until interrupted (0) or until the server exits (its exit code)."""
    record = SweepRecord.load(layout)
    if is_served(record.tracking_uri):
        print(f"Sweep '{record.name}' logs to an MLflow server: {experiment_url(record.tracking_uri, record)}")
        return 0
    port = port or free_port(host)
    base = f"http://{host}:{port}"
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", record.tracking_uri,
        "--host", host, "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    process = start_server(command)
    # The finally below covers every way out of the try; atexit covers a signal that lands before it.
    atexit.register(stop_server, process)
    previous = {signum: signal.signal(signum, _stop) for signum in STOP_SIGNALS}
    try:
        wait_until_ready(base, process, timeout_s)
        print(f"MLflow UI for sweep '{record.name}': {experiment_url(base, record)}", flush=True)
        print(f"Parent run: {run_url(base, record)}", flush=True)
        print("Press Ctrl-C to stop.", flush=True)
        return process.wait()
    except Stopped:
        return 0
    finally:
        # A second Ctrl-C must not cut the stopping short; it takes STOP_GRACE_S at most.
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        stop_server(process)
        atexit.unregister(stop_server)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
