"""What a command shows on the console, and what goes to the sweep's log file instead.

While a sweep runs, the console shows its progress (``orchestrator.progress``)
at the level the flags ask. The log records of Ray, Tune and the libraries a
sweep drives (MLflow, Optuna), Python's warnings and Tune's experiment banner
go to the sweep's ``effsweep.log`` instead, and reach the console too only
with ``--verbose``: they are addressed to whoever debugs those libraries, not
to whoever follows a sweep.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from orchestrator.progress import logger as progress_logger
from orchestrator.progress import progress_handler

# Ray Data and Ray Train may configure their loggers apart from "ray" (own handlers, no propagation);
# MLflow, Optuna and Alembic (MLflow's database migrations) each print to the console by their own handler.
LIBRARY_LOGGERS = ("ray", "ray.tune", "ray.train", "ray.data", "mlflow", "optuna", "alembic")
WARNINGS_LOGGER = "py.warnings"  # where logging.captureWarnings sends Python's warnings
# Tune prints its experiment banner even when told to be silent, unless its older output engine is chosen.
TUNE_OUTPUT_ENV = "RAY_AIR_NEW_OUTPUT"


@contextmanager
def sweep_console(log_file: Path, *, quiet: bool, verbose: bool) -> Iterator[None]:
    """Progress on stdout (events unless ``quiet``, reports too if ``verbose``); libraries' logs into ``log_file``."""
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    with ExitStack() as stack:
        stack.enter_context(_progress_to(sys.stdout, level))
        stack.enter_context(_logs_to_file(log_file, console=verbose))
        if not verbose:
            stack.enter_context(_environment(TUNE_OUTPUT_ENV, "0"))
        yield


@contextmanager
def _progress_to(stream: TextIO, level: int) -> Iterator[None]:
    handler = progress_handler(stream)
    saved = progress_logger.level, progress_logger.propagate
    progress_logger.setLevel(level)
    progress_logger.addHandler(handler)
    progress_logger.propagate = False
    try:
        yield
    finally:
        progress_logger.removeHandler(handler)
        handler.close()
        progress_logger.setLevel(saved[0])
        progress_logger.propagate = saved[1]


@contextmanager
def _logs_to_file(log_file: Path, *, console: bool) -> Iterator[None]:
    """The libraries' loggers and Python's warnings into ``log_file``, and off the console unless ``console``."""
    to_file = SweepLogHandler(log_file)
    removed: list[tuple[logging.Logger, int, logging.Handler]] = []
    added: list[tuple[logging.Logger, logging.Handler]] = []
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        if not console:
            removed += [(logger, i, h) for i, h in enumerate(logger.handlers) if _on_console(h)]
        if not logger.propagate or name == "ray":  # those that propagate reach "ray"'s handlers
            added.append((logger, to_file))
    warnings = logging.getLogger(WARNINGS_LOGGER)
    added.append((warnings, to_file))
    if console:
        added.append((warnings, logging.StreamHandler(sys.stderr)))
    saved_propagate = warnings.propagate
    warnings.propagate = False  # else a handler a library put on the root logger prints them
    for logger, _, handler in removed:
        logger.removeHandler(handler)
    for logger, handler in added:
        logger.addHandler(handler)
    logging.captureWarnings(True)
    try:
        yield
    finally:
        logging.captureWarnings(False)
        for logger, handler in added:
            logger.removeHandler(handler)
        for logger, index, handler in removed:  # by rising index, each back at its place
            logger.handlers.insert(index, handler)
        warnings.propagate = saved_propagate
        to_file.close()


@contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    saved = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if saved is None:
            del os.environ[name]
        else:
            os.environ[name] = saved


def _on_console(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)


class SweepLogHandler(logging.FileHandler):
    """Appends to a sweep's log file, made with its directory at the first record, not before.

    A sweep refused before it starts (a bad corpus) then leaves no directory behind.
    """

    def __init__(self, path: Path) -> None:
        super().__init__(path, delay=True, encoding="utf-8")
        self.formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def setFormatter(self, fmt: logging.Formatter | None) -> None:
        """Keep the log's one format: ``ray.init`` gives every handler of the "ray" logger Ray's own."""

    def _open(self) -> TextIO:
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


class ProgressBar:
    """A terminal progress bar for ``Progress`` callbacks, opened on the first call."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._bar: tqdm | None = None

    def __call__(self, done: int, total: int) -> None:
        if self._bar is None:
            self._bar = tqdm(total=total, desc=self.label, unit="doc", file=sys.stderr)
        self._bar.update(done - self._bar.n)
        if done >= total:
            self._bar.close()
