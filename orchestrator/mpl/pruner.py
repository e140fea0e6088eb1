"""The ``mpl`` scheduler: stop the trials the Multi-Power Law predicts will not win.

At decision points (fractions of each trial's planned compute) the pruner
predicts the trial's ``final_val_loss`` from its curve so far and its
planned learning rates: A is fitted to the trial alone (closed form), while
L0 and the decay shape (alpha, B, C, beta, gamma) are shared by the sweep
and refitted, in a separate process, on every trial's curve whenever a
trial completes. The prediction comes with an interval
(the fit's standard error and the shared fit's model error, times ``z``, and
at least the largest relative error made predicting the completed trials
from their curves at the same share of their compute: early in a run the
law's extrapolation is worse than its fit says).
A trial is stopped when even its optimistic prediction is worse, by
``margin``, than the best pessimistic one: a completed trial's actual final
loss, or a running trial's upper bound.

Nothing is stopped by a prediction until ``min_completed`` trials the law
models have finished: before then the sweep has no fitted decay shape,
unless it is given a ``prior``, the shared fit of an earlier sweep (or of
``effsweep mpl fit``) on the same model and validation data. With one, the
first trials are judged from the prior's L0 and decay shape, and the
sweep's own fit starts from it once ``min_completed`` trials have finished.
``background=False`` refits in the foreground instead, so a replay gives the
same decisions every time. Trials with patch training are judged on their
token phase only, whose schedule starts afresh.

The law models trials whose rate follows a planned schedule (``adamw``,
``sgd``). Rules that choose their own rate (``armijo_sgd``, ``vsgd``) have no
future rates to predict from, and schedule-free rules anneal by averaging
the iterates, which no learning rate shows: the law would misjudge both.
They fall back to the median stopping rule at the same decision points: a
trial is stopped when its validation loss is worse, by ``margin``, than the
median loss of every other trial at the same share of its compute (once at
least ``min_completed`` others have reached it). They stay out of the
shared fit, and their actual final losses still count as incumbents.

Predictions go to ``DIR/mpl/predictions.jsonl`` (the MLflow callback logs
them as ``mpl_pred_final``, ``mpl_pred_low`` and ``mpl_pred_high``, through
``orchestrator.mpl.hooks``). The
pruner's state travels in Tune's experiment snapshot (``save``/``restore``,
see ``orchestrator.snapshots``), so a resumed sweep decides as an
uninterrupted one would; ``DIR/mpl/state.json`` mirrors it for a later
sweep's ``prior``. Refits run in order of the completions that made them
due, each on the trials as they stood then, and a decision waits for the
refits due before it: decisions do not depend on how fast a refit runs.
"""

from __future__ import annotations

import json
import math
import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from orchestrator.mpl.fit import MPLFit
from orchestrator.mpl.tracks import Prediction, RefitInputs, TrialTrack, predict_final, refit, should_stop

DECISION_FRACTIONS = (0.1, 0.2, 0.3, 0.5, 0.7)  # of a trial's planned compute, unless given

PREDICTIONS = "predictions.jsonl"
PREDICTION_METRICS = ("mpl_pred_final", "mpl_pred_low", "mpl_pred_high")  # each line's, logged to the trial's run


class MPLPruner(FIFOScheduler):
    """Stops trials the Multi-Power Law predicts will not win; see the module docstring.

    Example:
        >>> import tempfile
        >>> pruner = MPLPruner(Path(tempfile.mkdtemp()), fractions=(0.2, 0.5), margin=0.01)
        >>> law = {"L0": 2.0, "alpha": 0.4, "B": 300.0, "C": 2.0, "beta": 0.6, "gamma": 0.6}
        >>> warm = MPLPruner(Path(tempfile.mkdtemp()), prior=MPLFit(law, relative_rmse=0.01))
        >>> should_stop(Prediction(2.6, 2.55, 2.65), incumbent_high=2.5, margin=0.01)
        True
    """

    def __init__(
        self,
        sweep_dir: Path,
        *,
        fractions: tuple[float, ...] = DECISION_FRACTIONS,
        margin: float = 0.0,
        z: float = 1.64,
        min_completed: int = 2,
        prior: MPLFit | None = None,
        background: bool = True,
    ) -> None:
        if not fractions or any(not 0 < f < 1 for f in fractions):
            raise ValueError(f"decision fractions must lie in (0, 1), got {fractions}")
        if margin < 0 or z <= 0 or min_completed < 1:
            raise ValueError(f"need margin >= 0, z > 0, min_completed >= 1; got {margin}, {z}, {min_completed}")
        if prior is not None and "L0" not in prior.shared:
            raise ValueError(f"a prior needs one L0 for all its curves; this fit has one per curve: {prior.shared}")
        self.prior = prior
        super().__init__()
        self.folder = Path(sweep_dir) / "mpl"
        self.fractions = tuple(sorted(fractions))
        self.margin, self.z, self.min_completed = margin, z, min_completed
        self.background = background
        self._reset()

    def _reset(self) -> None:
        self._tracks: dict[str, TrialTrack] = {}
        self._fit: MPLFit | None = self.prior
        self._calibration: list[float] = []
        # Refits due, oldest first: what each modelled trial had spent and which had finished when one
        # more trial finished. A refit runs on the trials as they stood then, whenever it runs, so the
        # chain of fits does not depend on timing or on a restart.
        self._due: list[RefitInputs] = []
        self._pending: Future | None = None
        self._pool: ProcessPoolExecutor | None = None

    _LIVE = ("_tracks", "_fit", "_calibration", "_due", "_pending", "_pool")

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles schedulers into its experiment checkpoint; the live parts are rebuilt.
        return {k: v for k, v in self.__dict__.items() if k not in self._LIVE}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    # --- Tune's scheduler interface -------------------------------------------------

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return super().set_search_properties(metric, mode, **spec)

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        if trial.trial_id not in self._tracks:
            self._tracks[trial.trial_id] = TrialTrack.from_config(trial.config)

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        self._advance_refits(wait=False)
        track = self._tracks.get(trial.trial_id)
        if track is None:
            self.on_trial_add(tune_controller, trial)
            track = self._tracks[trial.trial_id]
        track.observe(result)
        if (
            track.next_decision >= len(self.fractions)
            or track.compute < self.fractions[track.next_decision] * track.budget
        ):
            return TrialScheduler.CONTINUE
        while (
            track.next_decision < len(self.fractions)
            and track.compute >= self.fractions[track.next_decision] * track.budget
        ):
            track.next_decision += 1
            track.losses_at_decisions.append(math.inf if track.latest_loss is None else track.latest_loss)
        if track.modelled:
            decision = self._decide(trial.trial_id, track, int(result.get("step", 0)))
        else:
            decision = self._decide_by_median(trial.trial_id, track)
        self._save()
        return decision

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict) -> None:
        track = self._tracks.get(trial.trial_id)
        if track is not None and result and math.isfinite(result.get("final_val_loss", math.nan)):
            track.observe(result)
            track.final = float(result["final_val_loss"])
            self._refit_due()
        self._save()

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        self._save()

    def debug_string(self) -> str:
        done = sum(t.final is not None for t in self._tracks.values())
        shape = "fitted" if self._fit else "not fitted yet"
        return f"MPLPruner: {len(self._tracks)} trials, {done} completed, decay shape {shape}"

    # --- decisions ----------------------------------------------------------------

    def _decide(self, trial_id: str, track: TrialTrack, step: int) -> str:
        # A decision waits for the fit of every trial finished before it (usually long landed), so that
        # the same sweep decides the same way however fast its refits run.
        self._advance_refits(wait=True)
        if self._fit is None:
            return TrialScheduler.CONTINUE
        calibration = self._calibration[track.next_decision - 1] if self._calibration else 0.0
        prediction = predict_final(track, self._fit, self.z, calibration)
        if prediction is None:
            return TrialScheduler.CONTINUE
        track.last = prediction
        others = [t for tid, t in self._tracks.items() if tid != trial_id]
        finals = [t.final for t in others if t.final is not None]
        highs = [t.last.high for t in others if t.final is None and t.last is not None]
        incumbent = min(finals + highs, default=math.inf)
        stop = should_stop(prediction, incumbent, self.margin)
        self._log(trial_id, step, track, prediction, stop)
        return TrialScheduler.STOP if stop else TrialScheduler.CONTINUE

    def _decide_by_median(self, trial_id: str, track: TrialTrack) -> str:
        point = len(track.losses_at_decisions) - 1
        others = [
            t.losses_at_decisions[point]
            for tid, t in self._tracks.items()
            if tid != trial_id and len(t.losses_at_decisions) > point
        ]
        if len(others) < self.min_completed:
            return TrialScheduler.CONTINUE
        stop = track.losses_at_decisions[point] > float(np.median(others)) * (1.0 + self.margin)
        return TrialScheduler.STOP if stop else TrialScheduler.CONTINUE

    def _log(self, trial_id: str, step: int, track: TrialTrack, prediction: Prediction, stop: bool) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        line = {"trial_id": trial_id, "step": step, "compute": track.compute, "fraction": track.compute / track.budget}
        line |= {"mpl_pred_final": prediction.value, "mpl_pred_low": prediction.low, "mpl_pred_high": prediction.high}
        with open(self.folder / PREDICTIONS, "a") as file:
            file.write(json.dumps(line | {"stopped": stop}) + "\n")

    # --- the shared fit, off Tune's event loop ----------------------------------------

    def _refit_due(self) -> None:
        finished = [tid for tid, t in self._tracks.items() if t.modelled and t.final is not None]
        if len(finished) >= self.min_completed:
            spent = {tid: t.compute for tid, t in self._tracks.items() if t.modelled}
            self._due.append(RefitInputs(spent, finished))
        self._advance_refits(wait=False)

    def _advance_refits(self, *, wait: bool) -> None:
        """Take a landed fit and start the next one due; with ``wait``, until none is left."""
        while True:
            if self._pending is not None:
                if not (wait or self._pending.done()):
                    return
                self._take(self._pending.result())
                self._pending = None
                self._due.pop(0)
            if not self._due:
                return
            job = (self._due[0].curves(self._tracks), self._fit.to_json() if self._fit else None)
            finished = [self._tracks[tid] for tid in self._due[0].finished]
            if not self.background:  # in the foreground: replays and tests
                self._take(refit(*job, finished, self.fractions))
                self._due.pop(0)
                continue
            if self._pool is None:
                self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
            self._pending = self._pool.submit(refit, *job, finished, self.fractions)

    def _take(self, refit: dict[str, Any]) -> None:
        self._fit = MPLFit.from_json(refit["fit"])
        self._calibration = refit["calibration"]

    def wait_for_fit(self) -> None:
        """Block until every refit due has landed (for tests and benchmarks, not Tune's loop)."""
        self._advance_refits(wait=True)

    # --- persistence ----------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        return {
            "tracks": {tid: asdict(t) for tid, t in self._tracks.items()},
            "fit": self._fit.to_json() if self._fit else None,
            "calibration": self._calibration,
            "due": [asdict(inputs) for inputs in self._due],  # a refit under way is due again after a restore
        }

    def _save(self) -> None:
        """``DIR/mpl/state.json``: the pruner's state for a person, or as a later sweep's prior."""
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = self.folder / "state.json.tmp"
        partial.write_text(json.dumps(self._state()))
        partial.replace(self.folder / "state.json")

    def save(self, checkpoint_path: str) -> None:
        """Tune's scheduler checkpoint, taken with each experiment snapshot (``orchestrator.snapshots``)."""
        Path(checkpoint_path).write_text(json.dumps(self._state()))

    def restore(self, checkpoint_path: str) -> None:
        if self._pending is not None:
            raise RuntimeError("cannot restore an MPL pruner while one of its refits is under way")
        state = json.loads(Path(checkpoint_path).read_text())
        self._tracks = {}
        for tid, raw in state["tracks"].items():
            last = raw.pop("last")
            self._tracks[tid] = TrialTrack(**raw, last=Prediction(**last) if last else None)
        self._fit = MPLFit.from_json(state["fit"]) if state["fit"] else self.prior
        self._calibration = state["calibration"]
        self._due = [RefitInputs(**raw) for raw in state["due"]]


def read_predictions(sweep_dir: Path) -> pd.DataFrame:
    """Every prediction the pruner made in a sweep, one row per trial and step (empty if it made none).

    A decision made again after a resume writes its line again; the last one stands.
    """
    path = Path(sweep_dir) / "mpl" / PREDICTIONS
    if not path.is_file():
        return pd.DataFrame()
    lines = pd.read_json(path, lines=True, dtype={"trial_id": str})  # ids of digits alone stay text
    return lines.drop_duplicates(["trial_id", "step"], keep="last", ignore_index=True)


class PredictionFeed:
    """Reads the predictions file as it grows: each call returns the lines written since the last."""

    def __init__(self, sweep_dir: Path) -> None:
        self.path = Path(sweep_dir) / "mpl" / PREDICTIONS
        self._offset = 0

    def new(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        with open(self.path) as file:
            file.seek(self._offset)
            text = file.read()
        complete = text[: text.rfind("\n") + 1]  # a line still being written waits for the next call
        self._offset += len(complete.encode())
        return [json.loads(line) for line in complete.splitlines() if line]
