"""``effsweep ui`` serves the MLflow UI; headless Chromium finds the sweep and a trial's val_loss.

Stopping ``effsweep ui`` (SIGTERM or SIGINT to it alone) stops its whole
MLflow server: the port closes and no process of the server's group is left.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from playwright.sync_api import Page, expect, sync_playwright

from orchestrator.ui import free_port
from tests.conftest import EFFSWEEP, REPO, Sweep

pytestmark = pytest.mark.slow  # the MLflow server and a browser

# Chromium flags for a machine without display or outside network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _chromium() -> str:
    path = shutil.which("chromium")
    assert path, "Debian's chromium is needed for this test; `make test` installs it"
    return path


def _start_ui(root: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*EFFSWEEP, "ui", str(root), *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )


def _printed_url(ui: subprocess.Popen[str]) -> str:
    """The runs-table URL that ``effsweep ui`` prints once its server answers."""
    deadline = time.monotonic() + 120
    line = ""
    while time.monotonic() < deadline and "MLflow UI for sweep" not in line:
        line = ui.stdout.readline()
        assert line or ui.poll() is None, "effsweep ui exited early"
    assert "MLflow UI for sweep 'e2e': http://127.0.0.1:" in line
    return line.rsplit(" ", 1)[-1].strip()


@pytest.fixture(scope="module")
def ui_url(e2e_sweep: Sweep) -> Iterator[str]:
    ui = _start_ui(e2e_sweep.root)
    try:
        yield _printed_url(ui)
    finally:
        ui.terminate()
        ui.wait(timeout=30)


@pytest.fixture(scope="module")
def page() -> Iterator[Page]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_chromium(), headless=True, args=CHROMIUM_ARGS)
        yield browser.new_page(viewport={"width": 1400, "height": 900})
        browser.close()


def test_ui_lists_the_sweep_and_its_trials(ui_url: str, page: Page, e2e_sweep: Sweep) -> None:
    record = json.loads((e2e_sweep.root / "sweep.json").read_text())
    assert ui_url.endswith(f"/#/experiments/{record['experiment_id']}/runs?workflowType=machine_learning")
    page.goto(ui_url)
    # The model-training view: its runs table is "Runs" (the GenAI view's is "Training runs").
    expect(page.get_by_role("heading", name="Runs", exact=True)).to_be_visible(timeout=60_000)
    parent = page.locator(f'a[href="#/experiments/{record["experiment_id"]}/runs/{record["parent_run_id"]}"]')
    expect(parent).to_have_text("e2e", timeout=60_000)
    expect(page.get_by_text("5 matching runs")).to_be_visible()  # the parent and its four trials
    # Child runs are folded under the parent; unfold them and every trial shows by name.
    parent.locator("xpath=ancestor::*[@role='gridcell'][1]").get_by_role("button").first.click()
    expect(page.get_by_role("link", name=re.compile(r"^lm_trial_[0-9a-f]{8}$"))).to_have_count(4)


def test_ui_shows_a_trials_validation_loss_curve(ui_url: str, page: Page, e2e_sweep: Sweep) -> None:
    record = json.loads((e2e_sweep.root / "sweep.json").read_text())
    client = MlflowClient(record["tracking_uri"])
    child = client.search_runs(
        [record["experiment_id"]], filter_string=f"tags.`mlflow.parentRunId` = '{record['parent_run_id']}'"
    )[0]
    base = ui_url.split("/#/")[0]
    page.goto(f"{base}/#/experiments/{record['experiment_id']}/runs/{child.info.run_id}")
    expect(page.get_by_text(child.info.run_name).first).to_be_visible(timeout=60_000)
    # The trial's page links back to the sweep's parent run.
    parent = page.locator(f'a[href="#/experiments/{record["experiment_id"]}/runs/{record["parent_run_id"]}"]')
    expect(parent.first).to_have_text("e2e")
    page.get_by_role("tab", name="Model metrics").click()
    page.get_by_placeholder("Search metric charts").fill("val_loss")
    chart_titles = page.get_by_text("val_loss", exact=True)
    expect(chart_titles.first).to_be_visible(timeout=30_000)
    # The chart is drawn from the logged history: its legend names this trial's val_loss series.
    expect(page.get_by_text(f"{child.info.run_name} (val_loss)").first).to_be_visible()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stopped_ui_stops_its_whole_server(e2e_sweep: Sweep, signum: signal.Signals) -> None:
    port = free_port("127.0.0.1")
    ui = _start_ui(e2e_sweep.root, "--port", str(port))
    try:
        assert f"http://127.0.0.1:{port}/" in _printed_url(ui)
        servers = [p for p in _processes() if p.ppid == ui.pid]
        assert len(servers) == 1, servers
        group = servers[0].pgrp
        assert group != os.getpgid(ui.pid), "the server has a process group of its own"
        assert len(_members(group)) >= 2, "the server and its uvicorn"
        ui.send_signal(signum)  # to effsweep alone, as a supervisor or `kill PID` would send it
        assert _eventually(lambda: not _accepts(port), 5), f"port {port} still open 5 s after {signum.name}"
        assert ui.wait(timeout=60) == 0
        assert _eventually(lambda: not _members(group), 10), f"left of the server's group: {_members(group)}"
    finally:
        if ui.poll() is None:
            ui.kill()
            ui.wait()


class _Process:
    def __init__(self, pid: int, stat: str) -> None:
        # /proc/PID/stat: "pid (comm) state ppid pgrp ...", comm possibly holding spaces and parentheses
        state, ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        self.pid, self.state, self.ppid, self.pgrp = pid, state, int(ppid), int(pgrp)

    def __repr__(self) -> str:
        return f"pid {self.pid} ({self.state}, parent {self.ppid}, group {self.pgrp})"


def _processes() -> list[_Process]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):  # it exited while we looked
                found.append(_Process(int(entry.name), (entry / "stat").read_text()))
    return found


def _members(group: int) -> list[_Process]:
    """The live processes of a process group (a zombie has exited; reaping it is its new parent's business)."""
    return [p for p in _processes() if p.pgrp == group and p.state != "Z"]


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except ConnectionRefusedError:
        return False


def _eventually(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True
