"""The MPL pruner: its decision rule, its predictions, its state, and a small real sweep."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from ray.tune.schedulers import TrialScheduler

from orchestrator.mpl.fit import MPLFit
from orchestrator.mpl.pruner import MPLPruner, PredictionFeed, read_predictions
from orchestrator.mpl.tracks import Prediction, RefitInputs, TrialTrack, calibrate, predict_final, should_stop
from orchestrator.schedulers import build_scheduler
from orchestrator.spec import SpecError, parse_spec
from orchestrator.sweep import run_sweep
from tests.conftest import tiny_spec
from trainables.config import TrialConfig
from trainables.laws.multipower import MPLParams, mpl_predict

SHAPE = {"alpha": 0.45, "B": 350.0, "C": 2.0, "beta": 0.6, "gamma": 0.55}
SWEEP = SHAPE | {"L0": 2.0}  # a sweep's shared fit: the decay shape and L0


def test_the_decision_rule() -> None:
    incumbent = 2.50
    assert should_stop(Prediction(2.60, 2.55, 2.65), incumbent, margin=0.0)
    assert not should_stop(Prediction(2.60, 2.49, 2.70), incumbent, margin=0.0)  # might still win
    assert not should_stop(Prediction(2.60, 2.55, 2.65), incumbent, margin=0.03)  # within the margin


def test_a_trial_following_the_law_is_predicted_within_its_interval() -> None:
    cfg = TrialConfig.from_flat({"budget.compute": 3000 * 2048, "batch_size": 16, "schedule.name": "wsd"})
    lrs = cfg.planned_lrs()
    truth = MPLParams(L0=2.0, A=0.6, **SHAPE)
    track = TrialTrack.from_config(cfg.to_flat())
    for step in range(100, 901, 100):  # 30% of the run, all before the decay
        track.observe({"step": step, "compute": step * 2048, "val_loss": float(mpl_predict(truth, lrs, [step])[0])})
    prediction = predict_final(track, MPLFit(dict(SWEEP), {}, 0.002), z=1.64)
    final = float(mpl_predict(truth, lrs, [len(lrs)])[0])
    assert prediction.low <= final <= prediction.high
    assert prediction.value == pytest.approx(final, rel=2e-3)
    assert prediction.value < track.losses[-1] - 0.05  # the decay still to come is part of the prediction


def test_calibration_widens_early_intervals_by_the_errors_seen_on_finished_trials() -> None:
    cfg = TrialConfig.from_flat({"budget.compute": 3000 * 2048, "batch_size": 16, "schedule.name": "wsd"})
    lrs = cfg.planned_lrs()
    truth = MPLParams(L0=2.0, A=0.6, **SHAPE)
    track = TrialTrack.from_config(cfg.to_flat())
    for step in range(100, 3001, 100):
        loss = float(mpl_predict(truth, lrs, [step])[0]) + (0.3 if step <= 300 else 0.0)  # a transient early on
        track.observe({"step": step, "compute": step * 2048, "val_loss": loss})
    track.final = track.losses[-1]
    fit = MPLFit(dict(SWEEP), {}, 0.002)
    early, late = calibrate([track], fit, (0.1, 0.5))
    assert early > 0.02 and late < early  # the transient misleads the early prediction, not the later one
    narrow = predict_final(track.until(0.1 * track.budget), fit, z=1.64)
    wide = predict_final(track.until(0.1 * track.budget), fit, z=1.64, min_relative_error=early)
    assert wide.high - wide.low >= 2 * early * wide.value * 0.999 > narrow.high - narrow.low


def test_rules_the_law_does_not_model_fall_back_to_the_median_rule(tmp_path: Path) -> None:
    pruner = MPLPruner(tmp_path, fractions=(0.2,), min_completed=2, background=False)
    budget = 1_000_000
    decisions = {}
    for name, rule, loss in (
        ("a", "vsgd", 3.0),
        ("b", "schedule_free_adamw", 3.1),
        ("c", "armijo_sgd", 3.5),
        ("d", "vsgd", 2.9),
    ):
        trial = SimpleNamespace(trial_id=name, config={"budget.compute": budget, "optimizer.name": rule})
        pruner.on_trial_add(None, trial)
        assert not pruner._tracks[name].modelled
        early = pruner.on_trial_result(None, trial, {"step": 10, "compute": 0.1 * budget, "val_loss": loss + 0.5})
        assert early == TrialScheduler.CONTINUE  # before the decision point
        decisions[name] = pruner.on_trial_result(None, trial, {"step": 20, "compute": 0.25 * budget, "val_loss": loss})
    # a and b: too few others to compare with; c: worse than the median of 3.0 and 3.1; d: better than 3.1.
    assert decisions == {"a": "CONTINUE", "b": "CONTINUE", "c": "STOP", "d": "CONTINUE"}
    assert not (tmp_path / "mpl" / "predictions.jsonl").exists()  # no law, no predictions to log


def test_patch_trials_are_judged_on_their_token_phase() -> None:
    settings = {"budget.compute": 2e6, "patch.K": 4, "patch.lambda": 0.5, "schedule.name": "cosine"}
    track = TrialTrack.from_config(settings)
    patch_steps, token_steps = TrialConfig.from_flat(settings).phase_steps
    assert track.offset == patch_steps and len(track.planned) == token_steps
    track.observe({"step": patch_steps - 5, "phase": "patch", "val_loss": 3.0, "compute": 1.0})
    track.observe({"step": patch_steps + 20, "phase": "token", "val_loss": 2.9, "compute": 2.0})
    assert track.steps == [20]


def test_state_and_predictions_survive_a_restart(tmp_path: Path) -> None:
    pruner = MPLPruner(tmp_path)
    computes = [1e4, 2e4, 3e4]
    pruner._tracks["t1"] = TrialTrack(
        1e6, 0, [1e-3] * 10, steps=[1, 2, 3], losses=[3.0, 2.9, 2.8], computes=computes, compute=3e4,
        next_decision=1, final=2.5,
    )  # fmt: skip
    pruner._tracks["t2"] = TrialTrack(
        1e6, 0, [1e-3] * 10, steps=[1, 2, 3], losses=[3.1, 3.0, 2.9], computes=computes, compute=3e4
    )
    pruner._fit = MPLFit(dict(SWEEP), {}, 0.01)
    pruner._calibration = [0.05, 0.02]
    pruner._due = [RefitInputs({"t1": 3e4, "t2": 2e4}, ["t1"])]  # a refit that had not landed
    pruner._log("t1", 3, pruner._tracks["t1"], Prediction(2.5, 2.4, 2.6), stop=False)
    pruner.save(str(tmp_path / "checkpoint"))
    again = MPLPruner(tmp_path)
    again.restore(str(tmp_path / "checkpoint"))
    assert again._tracks == pruner._tracks and again._fit.shared == SWEEP
    assert again._calibration == [0.05, 0.02]
    assert again._due == pruner._due  # it runs again after the restart, on the trials as they stood
    assert [len(c.steps) for c in again._due[0].curves(again._tracks)] == [3]  # t2 had 2 points by then
    feed = PredictionFeed(tmp_path)
    assert [line["mpl_pred_final"] for line in feed.new()] == [2.5]
    assert feed.new() == []  # only what is new
    pruner._log("t1", 4, pruner._tracks["t1"], Prediction(2.4, 2.3, 2.5), stop=True)
    assert [line["stopped"] for line in feed.new()] == [True]
    # A decision made again after a resume logs its line again; the export keeps one per trial and step.
    pruner._log("t1", 4, pruner._tracks["t1"], Prediction(2.4, 2.3, 2.5), stop=True)
    assert list(read_predictions(tmp_path)["step"]) == [3, 4]


def test_a_prior_judges_trials_before_any_has_completed(tmp_path: Path) -> None:
    settings = {"budget.compute": 3000 * 2048, "batch_size": 16, "schedule.name": "wsd"}
    lrs = TrialConfig.from_flat(settings).planned_lrs()
    prior = MPLFit(dict(SWEEP), {}, 0.002)
    cold = MPLPruner(tmp_path / "cold", fractions=(0.2,), background=False)
    warm = MPLPruner(tmp_path / "warm", fractions=(0.2,), prior=prior, background=False)
    decisions: dict[str, list[str]] = {"cold": [], "warm": []}
    for name, amplitude in (("fast", 0.6), ("slow", 1.2)):  # slow: twice the distance still to go
        law = MPLParams(L0=2.0, A=amplitude, **SHAPE)
        trial = SimpleNamespace(trial_id=name, config=settings)
        for label, pruner in (("cold", cold), ("warm", warm)):
            pruner.on_trial_add(None, trial)
            for step in range(100, 601, 100):  # to 20% of the run
                loss = float(mpl_predict(law, lrs, [step])[0])
                decision = pruner.on_trial_result(None, trial, {"step": step, "compute": step * 2048, "val_loss": loss})
            decisions[label].append(decision)
    assert decisions == {"cold": ["CONTINUE", "CONTINUE"], "warm": ["CONTINUE", "STOP"]}
    warm.save(str(tmp_path / "checkpoint"))
    restarted = MPLPruner(tmp_path / "warm", prior=prior)
    restarted.restore(str(tmp_path / "checkpoint"))
    assert restarted._fit.shared == SWEEP  # no fit of its own yet: still the prior


def test_a_spec_names_its_prior_and_bad_priors_are_refused(tmp_path: Path) -> None:
    good, per_trial = tmp_path / "fit.json", tmp_path / "per_trial.json"
    good.write_text(json.dumps({"fit": MPLFit(dict(SWEEP), {}, 0.01).to_json()}))
    per_trial.write_text(json.dumps({"fit": MPLFit(dict(SHAPE), {"a": (2.0, 0.5)}, 0.01).to_json()}))
    spec = parse_spec(tiny_spec(scheduler={"name": "mpl", "prior": str(good)}))
    assert build_scheduler(spec, tmp_path / "sweep")._fit.shared == SWEEP
    for scheduler, expected in (
        ({"name": "mpl", "prior": str(tmp_path / "missing.json")}, "missing.json: no such fit file"),
        ({"name": "mpl", "prior": str(per_trial)}, "per_trial.json fits L0 per curve"),
        ({"name": "asha", "prior": str(good)}, "scheduler.prior: not a setting of asha"),
    ):
        with pytest.raises(SpecError) as caught:
            parse_spec(tiny_spec(scheduler=scheduler))
        [problem] = caught.value.problems
        assert problem.startswith("scheduler.prior: ") and expected in problem


def test_constructor_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"decision fractions must lie in \(0, 1\), got \(0.5, 1.2\)"):
        MPLPruner(tmp_path, fractions=(0.5, 1.2))
    with pytest.raises(ValueError, match="need margin >= 0"):
        MPLPruner(tmp_path, margin=-0.1)
    with pytest.raises(ValueError, match="a prior needs one L0 for all its curves"):
        MPLPruner(tmp_path, prior=MPLFit(SHAPE, {"a": (2.0, 0.5)}, 0.01))


def test_a_real_sweep_stops_a_bad_trial_and_keeps_a_late_decaying_one(local_ray: None, tmp_path: Path) -> None:
    # One at a time, in this order: two good trials finish and give the sweep its decay shape; then a
    # trial whose rate collapses to a thousandth early on, and a WSD trial whose loss drops only at the end.
    raw = tiny_spec(
        name="pruning",
        output_dir=str(tmp_path / "pruning"),
        budget={"compute": 300_000},
        train={"eval_every": 10, "batch_size": 8, "schedule.step_frac": 0.05, "schedule.step_factor": 0.001},
        search={"schedule.name": {"choice": ["cosine", "constant", "two_step", "wsd"]}},
        searcher="grid",
        scheduler={"name": "mpl", "fractions": [0.2, 0.3, 0.5, 0.7], "min_completed": 2},
        concurrency=1,
        trials=None,
    )
    spec = parse_spec(raw)
    outcome = run_sweep(spec)
    statuses = outcome.results.trials.set_index("config.schedule.name")["status"].to_dict()
    assert statuses == {"cosine": "completed", "constant": "completed", "two_step": "pruned", "wsd": "completed"}
    predictions = pd.read_json(outcome.layout.root / "mpl" / "predictions.jsonl", lines=True)
    assert predictions["stopped"].sum() == 1
    client = MlflowClient(outcome.record.tracking_uri)
    record = json.loads((outcome.layout.root / "sweep.json").read_text())
    runs = client.search_runs([record["experiment_id"]], filter_string="tags.status = 'pruned'")
    assert len(client.get_metric_history(runs[0].info.run_id, "mpl_pred_final")) >= 1
    artifacts = {a.path for a in client.list_artifacts(record["parent_run_id"])}
    assert "mpl_predictions.png" in artifacts

    # A repeat sweep with the first one as its prior stops the bad trial after one completed trial,
    # short of min_completed: without the prior it would have no decay shape to predict with.
    raw |= {"name": "repeat", "output_dir": str(tmp_path / "repeat")}
    raw["search"] = {"schedule.name": {"choice": ["cosine", "two_step"]}}
    raw["scheduler"] |= {"prior": str(outcome.layout.root)}
    repeat = run_sweep(parse_spec(raw))
    statuses = repeat.results.trials.set_index("config.schedule.name")["status"].to_dict()
    assert statuses == {"cosine": "completed", "two_step": "pruned"}
