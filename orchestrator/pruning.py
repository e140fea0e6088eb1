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
them as ``mpl_pred_final``, ``mpl_pred_low`` and ``mpl_pred_high``). The
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from orchestrator.mpl import Curve, MPLFit, fit_mpl
from trainables.config import TrialConfig
from trainables.multipower import schedule_terms

DECISION_FRACTIONS = (0.1, 0.2, 0.3, 0.5, 0.7)  # of a trial's planned compute, unless given

PREDICTIONS = "predictions.jsonl"
# Step rules whose rate is their planned schedule, so the law can model their loss.
LAW_MODELLED = ("adamw", "sgd")


@dataclass(frozen=True)
class Prediction:
    value: float
    low: float
    high: float


def should_stop(prediction: Prediction, incumbent_high: float, margin: float) -> bool:
    """Stop when the trial's optimistic final loss is worse than the incumbent's pessimistic one by ``margin``."""
    return prediction.low > incumbent_high * (1.0 + margin)


@dataclass
class TrialTrack:
    """What the pruner knows of one trial: its judged phase's planned rates and the losses seen in it."""

    budget: float
    offset: int  # steps before the judged (token) phase
    planned: list[float] | None  # per-step rates of the judged phase; None: the rule chooses its own
    modelled: bool = True  # whether the law predicts it (see the module docstring)
    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    computes: list[float] = field(default_factory=list)  # the trial's compute at each of ``steps``
    compute: float = 0.0
    next_decision: int = 0
    final: float | None = None
    last: Prediction | None = None
    latest_loss: float | None = None  # the last validation loss, any phase
    losses_at_decisions: list[float] = field(default_factory=list)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TrialTrack:
        cfg = TrialConfig.from_flat(config)
        patch_steps, _ = cfg.phase_steps
        planned = cfg.planned_lrs()
        judged = None if planned is None else planned[patch_steps:].tolist()
        modelled = cfg.optimizer.name in LAW_MODELLED
        return cls(cfg.budget.compute, patch_steps, judged, modelled)

    def observe(self, result: dict[str, Any]) -> None:
        self.compute = float(result.get("compute", self.compute))
        loss = result.get("val_loss")
        if loss is None or not math.isfinite(loss):
            return
        self.latest_loss = float(loss)
        if result.get("phase", "token") != "token":
            return
        step = int(result["step"]) - self.offset
        if step >= 1 and (not self.steps or step > self.steps[-1]):
            self.steps.append(step)
            self.losses.append(float(loss))
            self.computes.append(self.compute)

    def schedule(self) -> np.ndarray:
        """Planned per-step rates of the judged phase (only trials the law models have them)."""
        if self.planned is None:
            raise ValueError("a trial whose rule chooses its own rate has no planned schedule")
        return np.asarray(self.planned)

    def until(self, compute: float) -> TrialTrack:
        """The track as it stood when the trial had spent ``compute``."""
        seen = sum(c <= compute for c in self.computes)
        return TrialTrack(
            self.budget, self.offset, self.planned, self.modelled, self.steps[:seen], self.losses[:seen],
            self.computes[:seen], compute,
        )  # fmt: skip

    def curve(self, name: str) -> Curve:
        lrs = self.schedule()
        return Curve(name, lrs[: self.steps[-1]], np.asarray(self.steps), np.asarray(self.losses))


def predict_final(track: TrialTrack, fit: MPLFit, z: float, min_relative_error: float = 0.0) -> Prediction | None:
    """The trial's final loss with an interval: A fitted to its curve so far, the rest from ``fit``.

    L0 and the decay shape are the sweep's (one model and one validation
    set: the trials share the loss the law tends to), so one parameter is
    fitted per trial; with L0 free as well, a curve that is still falling
    cannot tell L0 from A, and the predictions scatter. The interval's
    half-width is ``z`` standard errors, and at least ``min_relative_error``
    of the prediction (``calibrate`` measures it).
    """
    if len(track.steps) < 3:
        return None
    lrs = track.schedule()
    steps = np.asarray(track.steps)
    losses = np.asarray(track.losses)
    terms = schedule_terms(lrs, np.concatenate([steps, [len(lrs)]]))
    shape = fit.shared
    power = terms.power_area ** (-shape["alpha"])
    decay = shape["B"] * terms.decay(shape["C"], shape["beta"], shape["gamma"])
    # loss = L0 + A * power - decay, solved for A on relative residuals.
    x = power[:-1] / losses
    y = (losses + decay[:-1] - shape["L0"]) / losses
    amplitude = max(float(x @ y) / float(x @ x), 0.0)
    residual = amplitude * x - y
    sigma2 = max(float(residual @ residual) / max(len(steps) - 1, 1), fit.relative_rmse**2)
    value = float(shape["L0"] + amplitude * power[-1] - decay[-1])
    spread = math.sqrt(sigma2 / float(x @ x) * power[-1] ** 2 + (fit.relative_rmse * value) ** 2)
    half = max(z * spread, min_relative_error * value)
    return Prediction(value, value - half, value + half)


def calibrate(tracks: list[TrialTrack], fit: MPLFit, fractions: tuple[float, ...]) -> list[float]:
    """Per decision point, the largest relative error of predicting completed trials from their curve so far.

    The law describes a run's middle and end better than its start (a fresh
    model's loss first falls faster than any power law), so a prediction
    made early can be off by more than its standard error says; the trials
    that have finished show by how much, in this sweep.
    """
    errors = []
    for fraction in fractions:
        worst = 0.0
        for track in tracks:
            early = predict_final(track.until(fraction * track.budget), fit, z=0.0)
            if early is not None:
                worst = max(worst, abs(early.value - track.final) / track.final)
        errors.append(worst)
    return errors


def _refit(
    curves: list[Curve], prior: dict[str, Any] | None, finished: list[TrialTrack], fractions: tuple[float, ...]
) -> dict[str, Any]:
    """The shared fit and its calibration, run in a separate process (so a picklable, top-level function)."""
    fit = fit_mpl(curves, per_curve=("A",), prior=MPLFit.from_json(prior) if prior else None)
    return {"fit": fit.to_json(), "calibration": calibrate(finished, fit, fractions)}


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
                self._take(_refit(*job, finished, self.fractions))
                self._due.pop(0)
                continue
            if self._pool is None:
                self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
            self._pending = self._pool.submit(_refit, *job, finished, self.fractions)

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


@dataclass
class RefitInputs:
    """A refit's data: what each modelled trial had spent, and which trials had finished, when it fell due."""

    spent: dict[str, float]
    finished: list[str]

    def curves(self, tracks: dict[str, TrialTrack]) -> list[Curve]:
        then = {tid: tracks[tid].until(compute) for tid, compute in self.spent.items()}
        return [track.curve(tid) for tid, track in then.items() if len(track.steps) >= 3]


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
