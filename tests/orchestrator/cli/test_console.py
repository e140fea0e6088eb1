"""What the CLI shows: live sweep progress, where Ray's logs go, --version, help, select's count, a closed pipe."""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from ray import tune

from orchestrator.cli.console import sweep_console
from orchestrator.cli.main import _parser, main
from orchestrator.layout import SweepLayout, SweepRecord
from orchestrator.progress import CLEAR_LINE, ConsoleProgress, Tally, progress_handler, time_left
from orchestrator.progress import logger as progress_logger
from orchestrator.results import SweepResults, write_results
from tests.conftest import EFFSWEEP, REPO


def test_time_left_shares_the_remaining_work_among_the_running_slots() -> None:
    assert time_left([], [3.0], pending=5, slots=2) is None  # nothing finished: no estimate
    # Mean 15 s: three pending trials and 10 s more of one running 5 s, two at a time.
    assert time_left([10.0, 20.0], [5.0], pending=3, slots=2) == pytest.approx((3 * 15 + 10) / 2)
    assert time_left([10.0], [40.0], pending=0, slots=1) == 0.0  # a trial past the mean adds nothing


def test_tally_reads_as_counts_best_and_timing() -> None:
    tally = Tally(12, 3, 1, 0, 2, 2, 4, 3.21049, 252.0, None)
    assert tally.counts() == "3 completed, 1 pruned, 2 failed, 2 running, 4 pending of 12"
    assert str(tally) == f"{tally.counts()} | best final_val_loss 3.2105, 0:04:12 elapsed, ? left"


class Terminal:
    """A real pseudo-terminal: a stream writing to it, and a reader of what it shows."""

    def __init__(self) -> None:
        self._controller, device = os.openpty()
        self.stream = open(device, "w", encoding="utf-8")  # noqa: SIM115 - closed by screen()
        self._received: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self._controller, 4096)
            except OSError:  # the device side is closed and everything written has been read
                return
            if not chunk:
                return
            self._received.append(chunk)

    def screen(self) -> tuple[str, list[str]]:
        """Close the terminal; what was written to it, and its lines as they end up on screen."""
        self.stream.close()
        self._reader.join(timeout=30)
        os.close(self._controller)
        shown = b"".join(self._received).decode()
        # A line ends up as what follows the last clear of it.
        return shown, [line.split(CLEAR_LINE)[-1] for line in re.split(r"\r?\n", shown)]


def test_a_real_tune_run_reports_trials_and_the_tally(
    local_ray: None, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setenv("COLUMNS", "300")
    terminal = Terminal()
    live = progress_handler(terminal.stream)
    progress_logger.addHandler(live)

    def trainable(config: dict) -> None:
        if config["x"] == 0:
            raise RuntimeError("this trial fails")
        time.sleep(0.5)
        final = {"final_val_loss": config["x"]} if config["x"] > 0 else {}
        tune.report({"step": 10, "val_loss": abs(config["x"]), "compute": 1.0, **final})

    try:
        # Captured standard output is no terminal: the console shows timestamped lines there.
        with sweep_console(tmp_path / "effsweep.log", quiet=False, verbose=False):
            tune.Tuner(
                trainable,
                param_space={"x": tune.grid_search([2.0, 0.5, -1.0, 0.0, 1.5])},
                tune_config=tune.TuneConfig(max_concurrent_trials=1),
                run_config=tune.RunConfig(storage_path=str(tmp_path), callbacks=[ConsoleProgress(["x"])], verbose=0),
            ).fit()
    finally:
        progress_logger.removeHandler(live)
        live.close()

    printed = capsys.readouterr().out
    assert "View detailed results" not in printed  # Tune's banner is kept off the console
    lines = printed.splitlines()
    assert sum("started" in line for line in lines) == 5
    assert re.match(
        r"\d\d:\d\d:\d\d  \[0 completed, 0 pruned, 1 running, 4 pending of 5\]  trial \w+ started", lines[0]
    )
    assert re.search(r"trial \w+ failed; its error is in ", printed)
    last = lines[-1]
    assert "[3 completed, 1 pruned, 1 failed, 0 running, 0 pending of 5]" in last
    assert "best final_val_loss 0.5000" in last and "0:00:00 left" in last
    assert not any(line.endswith("]  ") for line in lines)  # the clock's ticks stay off a log

    shown, screen = terminal.screen()
    assert shown.count(CLEAR_LINE) > 5  # the status line is redrawn in place
    assert sum("started" in line for line in screen) == 5
    assert screen[-1] == ""  # the status line was ended when the sweep was over
    status = screen[-2]
    assert status.startswith("3 completed, 1 pruned, 1 failed, 0 running, 0 pending of 5 | best final_val_loss 0.5000")
    assert status.endswith(" elapsed, 0:00:00 left")


# Ray's console handler holds the stderr of the moment Ray was imported: a fresh process shows what it prints.
LOGGING_SCRIPT = """
import logging, sys, warnings
from pathlib import Path
from orchestrator.cli.console import sweep_console

logging.getLogger("ray").setLevel(logging.WARNING)  # as a sweep's ray.init sets it
for verbose in (False, True):
    print(f"verbose={verbose}", file=sys.stderr, flush=True)
    with sweep_console(Path(sys.argv[1]), quiet=False, verbose=verbose):
        logging.getLogger("ray.tune").warning("tune says this")
        logging.getLogger("ray.data").warning("data says this")
        warnings.warn(f"python says this (verbose={verbose})", UserWarning, stacklevel=1)
"""


def test_ray_logs_and_warnings_go_to_the_sweep_log_unless_verbose(tmp_path: Path) -> None:
    log_file = tmp_path / "sweep" / "effsweep.log"
    ran = subprocess.run(
        [sys.executable, "-c", LOGGING_SCRIPT, str(log_file)], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert ran.returncode == 0, ran.stderr
    quiet, verbose = ran.stderr.split("verbose=True\n")
    assert quiet == "verbose=False\n"
    assert "tune says this" in verbose and "data says this" in verbose and "python says this" in verbose
    logged = log_file.read_text()
    assert logged.count("WARNING ray.tune: tune says this") == 2 and logged.count("WARNING ray.data: data says") == 2
    assert "UserWarning: python says this (verbose=False)" in logged


def test_the_console_is_as_it_was_after_a_sweep(tmp_path: Path) -> None:
    loggers = [logging.getLogger(name) for name in ("ray", "ray.data", "py.warnings", "effsweep.progress")]
    before = [(list(logger.handlers), logger.level, logger.propagate) for logger in loggers]
    with sweep_console(tmp_path / "effsweep.log", quiet=False, verbose=False):
        assert [(list(logger.handlers), logger.level, logger.propagate) for logger in loggers] != before
    assert [(list(logger.handlers), logger.level, logger.propagate) for logger in loggers] == before


def test_a_refused_sweep_leaves_no_log_file(tmp_path: Path) -> None:
    with sweep_console(tmp_path / "never" / "effsweep.log", quiet=True, verbose=False):
        pass
    assert not (tmp_path / "never").exists()


def test_quiet_keeps_only_failures_and_verbose_adds_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for quiet, verbose in ((True, False), (False, True)):
        with sweep_console(tmp_path / "effsweep.log", quiet=quiet, verbose=verbose):
            progress_logger.debug("a report")
            progress_logger.info("an event")
            progress_logger.warning("a failure")
    out = capsys.readouterr().out.splitlines()
    assert [line.split("  ", 1)[1] for line in out] == ["a failure", "a report", "an event", "a failure"]


def test_version_comes_from_the_package(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as raised:
        main(["--version"])
    assert raised.value.code == 0
    assert capsys.readouterr().out == f"effsweep {version('effsweep')}\n"


def _positionals(parser: Any, path: str) -> Iterator[tuple[str, Any]]:
    for action in parser._actions:
        if action.choices and hasattr(action, "_name_parser_map"):
            for name, sub in action._name_parser_map.items():
                yield from _positionals(sub, f"{path} {name}".strip())
        elif not action.option_strings:
            yield path, action


def test_every_positional_argument_is_explained() -> None:
    positionals = list(_positionals(_parser(), ""))
    assert {"run", "resume", "ui", "select", "jobs logs"} <= {path for path, _ in positionals}
    assert [f"{path} {action.dest}" for path, action in positionals if not action.help] == []


def test_select_random_counts_every_document(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "order.parquet"
    assert main(["select", "gensim:lee_background", "--strategy", "random", "--out", str(out), "--seed", "3"]) == 0
    table = pq.read_table(out)
    assert f"{out}: 300 documents, 300 ranked by random selection" in capsys.readouterr().out
    assert sorted(table.column("document").to_pylist()) == list(range(300))


def test_results_into_a_pipe_closed_early_ends_without_a_traceback(tmp_path: Path) -> None:
    layout = SweepLayout(tmp_path / "sweep")
    layout.root.mkdir()
    SweepRecord("big", "hash", "sqlite:///unused.db", "1", "run", ["peak_lr"]).save(layout)
    n = 5000  # many times a pipe's buffer of JSON lines, so that writing outlives the reader
    trials = pd.DataFrame(
        {"trial_id": [f"t{i:05d}" for i in range(n)], "status": "completed", "final_val_loss": 3 + np.arange(n) / n,
         "val_loss": 3.0, "compute": 1e6, "step": 80, "error": "", "config.peak_lr": 1e-3}
    )  # fmt: skip
    write_results(SweepResults(trials, pd.DataFrame({"trial_id": []})), layout.results_dir)
    command = shlex.join([*EFFSWEEP, "results", str(layout.root), "--json"])
    piped = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {command} | head -1"], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert json.loads(piped.stdout)["trial_id"] == "t00000"
    assert piped.stderr == "" and piped.returncode == 141
