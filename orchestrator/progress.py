"""A sweep's progress on the console, through the ``effsweep.progress`` logger.

``ConsoleProgress``, a Tune callback, logs each trial's start, end and error
(its reports at DEBUG), every record carrying the sweep's ``Tally`` (trials
completed, pruned, running and pending, the best objective, elapsed and
estimated remaining time), and about once a second a tally-only record.
``progress_handler`` shows them: on a terminal, one status line redrawn in
place under the scrolling events; elsewhere, timestamped event lines prefixed
with the counts. Tune's own tables are off (``verbose=0``) and the CLI sets the
logger's level, so ``--quiet`` also holds for a restored sweep, whose callbacks
come back from Tune's checkpoint as constructed: the callback's running state
is made in ``setup()``.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from statistics import fmean
from typing import Any, TextIO

from ray.tune import Callback
from ray.tune.experiment import Trial

from orchestrator.results import trial_status
from trainables.loop import OBJECTIVE

logger = logging.getLogger("effsweep.progress")

TICK_S = 1.0  # the status line's clock moves this often between events
CLEAR_LINE = "\r\x1b[K"


@dataclass(frozen=True)
class Tally:
    """Where a sweep stands: its trials by outcome, the best objective, and its timing."""

    total: int | None  # trials the sweep runs, when Tune knows it
    completed: int
    pruned: int
    diverged: int
    failed: int
    running: int
    pending: int
    best: float | None
    elapsed_s: float
    left_s: float | None  # None until a trial has finished

    def counts(self) -> str:
        outcomes = [f"{self.completed} completed", f"{self.pruned} pruned"]
        outcomes += [f"{n} {label}" for n, label in ((self.diverged, "diverged"), (self.failed, "failed")) if n]
        of = f" of {self.total}" if self.total is not None else ""
        return ", ".join([*outcomes, f"{self.running} running", f"{self.pending} pending{of}"])

    def outlook(self) -> str:
        best = f"{self.best:.4f}" if self.best is not None else "-"
        left = _clock(self.left_s) if self.left_s is not None else "?"
        return f"best {OBJECTIVE} {best}, {_clock(self.elapsed_s)} elapsed, {left} left"

    def __str__(self) -> str:
        return f"{self.counts()} | {self.outlook()}"


def time_left(durations: Sequence[float], running_ages: Iterable[float], pending: int, slots: int) -> float | None:
    """Seconds until the sweep ends, if every trial to come lasts as long as the finished ones did on average.

    The work left (a mean duration per pending trial, the rest of a mean for each
    running one) is shared by ``slots`` trials at a time. None before any trial finished.
    """
    if not durations:
        return None
    mean = fmean(durations)
    work = pending * mean + sum(max(mean - age, 0.0) for age in running_ages)
    return work / max(slots, 1)


class ConsoleProgress(Callback):
    """Logs trial starts, reports and ends with the searched knobs and the sweep's tally."""

    def __init__(self, knobs: Sequence[str]) -> None:
        self.knobs = list(knobs)

    def setup(
        self, stop: Any = None, num_samples: int | None = None, total_num_samples: int | None = None, **info: Any
    ) -> None:
        trials = total_num_samples or num_samples
        self._total = trials if trials and trials > 0 else None  # -1: until a stopper ends the sweep
        self._started = time.monotonic()
        self._trial_started: dict[str, float] = {}
        self._slots = 1  # the most trials seen running at once
        self._next_tick = self._started

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._trial_started[trial.trial_id] = time.monotonic()
        knobs = "  ".join(f"{k}={_short(trial.config[k])}" for k in self.knobs if k in trial.config)
        # Tune marks the trial running only after this call.
        self._log(logging.INFO, trials, {trial.trial_id: Trial.RUNNING}, "trial %s started   %s", trial.trial_id, knobs)

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any) -> None:
        nan = float("nan")
        self._log(
            logging.DEBUG, trials, {},
            "trial %s step %5d  %-5s  compute %.3g  train_loss %.4f  val_loss %.4f  lr %.3g",
            trial.trial_id, result.get("step", 0), result.get("phase", ""), result.get("compute", 0),
            result.get("train_loss", nan), result.get("val_loss", nan), result.get("lr", nan),
        )  # fmt: skip

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        last = trial.last_result or {}
        status = trial_status(last, errored=False)
        if status == "completed":
            detail = f"{OBJECTIVE} {last[OBJECTIVE]:.4f} after {last.get('step', 0)} steps"
        elif status == "diverged":
            detail = f"at step {last.get('step', 0)}"
        else:
            detail = f"at compute {last.get('compute', 0):.3g} (val_loss {last.get('val_loss', float('nan')):.4f})"
        # Tune marks the trial terminated only after this call.
        ended = {trial.trial_id: Trial.TERMINATED}
        self._log(logging.INFO, trials, ended, "trial %s %-9s %s", trial.trial_id, status, detail, outlook=True)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        message = "trial %s failed; its error is in %s"
        self._log(logging.WARNING, trials, {}, message, trial.trial_id, trial.local_path, outlook=True)

    def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        if time.monotonic() >= self._next_tick:
            self._log(logging.INFO, trials, {}, "", status_only=True)

    def tally(self, trials: Sequence[Trial], assume: Mapping[str, str]) -> Tally:
        """The sweep's tally, taking the trials named in ``assume`` to be in the Tune status given there."""
        now = time.monotonic()
        outcomes = dict.fromkeys(("completed", "pruned", "diverged", "error"), 0)
        durations, ages, best = [], [], math.inf
        for trial in trials:
            status = assume.get(trial.trial_id, trial.status)
            last = trial.last_result or {}
            if status == Trial.RUNNING:
                ages.append(now - self._trial_started.get(trial.trial_id, now))
            elif status in (Trial.TERMINATED, Trial.ERROR):
                outcome = trial_status(last, errored=status == Trial.ERROR)
                outcomes[outcome] += 1
                durations.append(float(last.get("time_total_s", 0.0)))
                if outcome == "completed":
                    best = min(best, last[OBJECTIVE])
        self._slots = max(self._slots, len(ages))
        finished = sum(outcomes.values())
        waiting = len(trials) - finished - len(ages)
        pending = max(self._total - finished - len(ages), 0) if self._total is not None else waiting
        return Tally(
            self._total, outcomes["completed"], outcomes["pruned"], outcomes["diverged"], outcomes["error"],
            len(ages), pending, best if math.isfinite(best) else None, now - self._started,
            time_left(durations, ages, pending, self._slots),
        )  # fmt: skip

    def _log(
        self, level: int, trials: Sequence[Trial], assume: Mapping[str, str], message: str, *args: Any,
        outlook: bool = False, status_only: bool = False,
    ) -> None:  # fmt: skip
        if not logger.isEnabledFor(level):
            return
        self._next_tick = time.monotonic() + TICK_S
        extra = {"tally": self.tally(trials, assume), "outlook": outlook, "status_only": status_only}
        logger.log(level, message, *args, extra=extra)


class LiveStatusHandler(logging.Handler):
    """For a terminal: records scroll as lines above one status line, the latest tally, redrawn in place."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream
        self.setFormatter(logging.Formatter("%(asctime)s  %(message)s", "%H:%M:%S"))
        self._status = ""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tally = getattr(record, "tally", None)
            if tally is not None:
                # A status line wider than the terminal wraps, and the carriage return would redraw only its end.
                self._status = _fit(str(tally), shutil.get_terminal_size().columns - 1)
            line = "" if getattr(record, "status_only", False) else self.format(record) + "\n"
            self.stream.write(f"{CLEAR_LINE}{line}{self._status}")
            self.stream.flush()
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        """End the status line, so that what is printed next starts a line of its own."""
        if self._status:
            self.stream.write("\n")
            self.stream.flush()
            self._status = ""
        super().close()


class TallyFormatter(logging.Formatter):
    """``HH:MM:SS  [counts]  message``, with the best objective and the timing after a trial's end."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s  %(message)s", "%H:%M:%S")

    def formatMessage(self, record: logging.LogRecord) -> str:
        tally = getattr(record, "tally", None)
        if tally is None:
            return super().formatMessage(record)
        outlook = f"  ({tally.outlook()})" if getattr(record, "outlook", False) else ""
        return f"{record.asctime}  [{tally.counts()}]  {record.message}{outlook}"


def progress_handler(stream: TextIO) -> logging.Handler:
    """The live status line on a terminal; timestamped event lines elsewhere (a file, a pipe, a job's log)."""
    if stream.isatty() and os.environ.get("TERM") != "dumb":
        return LiveStatusHandler(stream)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TallyFormatter())
    handler.addFilter(lambda record: not getattr(record, "status_only", False))
    return handler


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
