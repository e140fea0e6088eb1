"""Whole sweeps on real Ray, MLflow and PyTorch, checked in the MLflow store and the Parquet export."""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any, ClassVar, Literal

import pandas as pd
import pytest
import yaml
from matplotlib.axes import Axes
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from ray import tune

from orchestrator.cli.main import main
from orchestrator.mlflow_runs import TRIAL_ID_TAG
from orchestrator.schedulers import SCHEDULERS
from orchestrator.schedulers.fifo import FIFOSettings
from orchestrator.spec import SweepSpec, parse_spec
from orchestrator.store_writer import STATUS_TAG
from orchestrator.sweep import SweepOutcome, run_sweep
from orchestrator.sweep_hooks import MetricFeed, SweepEnd, SweepHooks, TrialMetrics, active_hooks
from tests.conftest import REPO, Sweep, effsweep, tiny_spec, write_spec
from trainables.loop import FINAL_BITS_PER_BYTE, OBJECTIVE, REPORTED_METRICS


def _record(root: Path) -> dict:
    return json.loads((root / "sweep.json").read_text())


def _children(client: MlflowClient, record: dict) -> list:
    return client.search_runs(
        [record["experiment_id"]], filter_string=f"tags.{MLFLOW_PARENT_RUN_ID} = '{record['parent_run_id']}'"
    )


def _points_per_child(client: MlflowClient, record: dict) -> dict[str, int]:
    return {c.info.run_id: len(client.get_metric_history(c.info.run_id, "val_loss")) for c in _children(client, record)}


def test_cli_reports_the_best_trial_and_the_ui_command(e2e_sweep: Sweep) -> None:
    out = e2e_sweep.process.stdout
    assert "Trials: 4 (4 completed, 0 pruned, 0 diverged, 0 error)" in out
    assert "Best trial " in out and f"effsweep ui {e2e_sweep.root}" in out
    best = next(line for line in out.splitlines() if line.startswith("Best trial "))
    assert f"{OBJECTIVE} " in best and f"({FINAL_BITS_PER_BYTE} " in best  # comparable across tokenizers


def test_every_trial_is_a_child_run_with_params_metrics_and_status(e2e_sweep: Sweep) -> None:
    record = _record(e2e_sweep.root)
    assert record["tracking_uri"] == f"sqlite:///{e2e_sweep.root / 'mlflow.db'}"  # the default store
    client = MlflowClient(record["tracking_uri"])
    trials = pd.read_parquet(e2e_sweep.root / "results" / "trials.parquet").set_index("trial_id")
    metrics = pd.read_parquet(e2e_sweep.root / "results" / "metrics.parquet")

    children = _children(client, record)
    assert len(children) == 4
    assert {c.data.tags[TRIAL_ID_TAG] for c in children} == set(trials.index)
    for child in children:
        trial = trials.loc[child.data.tags[TRIAL_ID_TAG]]
        assert child.info.status == "FINISHED" and child.data.tags[STATUS_TAG] == "completed"
        config = {k.removeprefix("config."): v for k, v in trial.items() if k.startswith("config.")}
        logged = child.data.params
        assert set(logged) == {k for k, v in config.items() if v is not None and v == v}
        assert logged["peak_lr"] == str(config["peak_lr"]) and logged["model.d_model"] == "64"
        history = client.get_metric_history(child.info.run_id, "val_loss")
        reports = metrics[metrics["trial_id"] == trial.name].sort_values("step")
        assert [m.step for m in history] == reports["step"].tolist()
        assert [m.value for m in history] == pytest.approx(reports["val_loss"].tolist())
        assert child.data.metrics[OBJECTIVE] == pytest.approx(trial[OBJECTIVE])
        for name in REPORTED_METRICS:
            assert len(client.get_metric_history(child.info.run_id, name)) == len(reports)


def test_parent_run_holds_the_sweep_and_its_summary(e2e_sweep: Sweep) -> None:
    record = _record(e2e_sweep.root)
    client = MlflowClient(record["tracking_uri"])
    parent = client.get_run(record["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.info.run_name == "e2e"
    assert parent.data.params["data.corpus"] == "gensim:lee_background"
    assert parent.data.params["search"] == "schedule.name,peak_lr,batch_size,schedule.decay_frac"
    assert parent.data.metrics["n_trials"] == 4 and parent.data.metrics["n_completed"] == 4
    best = min(c.data.metrics[OBJECTIVE] for c in _children(client, record))
    assert parent.data.metrics[f"best_{OBJECTIVE}"] == pytest.approx(best)
    best_run = client.get_run(parent.data.tags["best_run_id"])
    assert best_run.data.metrics[OBJECTIVE] == pytest.approx(best)
    artifacts = {a.path for a in client.list_artifacts(record["parent_run_id"])}
    assert {"spec.yaml", "trials.parquet", "metrics.parquet", "val_loss.png"} <= artifacts


def test_parquet_export_has_every_report_of_every_trial(e2e_sweep: Sweep) -> None:
    trials = pd.read_parquet(e2e_sweep.root / "results" / "trials.parquet")
    metrics = pd.read_parquet(e2e_sweep.root / "results" / "metrics.parquet")
    assert len(trials) == 4 and trials["status"].eq("completed").all()
    assert trials[OBJECTIVE].is_monotonic_increasing
    assert (trials["tokens_per_s"] > 0).all() and "mfu" not in trials  # a CPU has no known peak
    # Bytes: one token a byte, so bits per byte are the loss in bits.
    assert trials[FINAL_BITS_PER_BYTE].to_numpy() == pytest.approx(trials[OBJECTIVE].to_numpy() / math.log(2))
    assert set(REPORTED_METRICS) <= set(metrics.columns)
    for trial_id, reports in metrics.groupby("trial_id"):
        assert reports["step"].is_monotonic_increasing
        last = reports.iloc[-1]
        assert last[OBJECTIVE] == pytest.approx(trials.set_index("trial_id").loc[trial_id, OBJECTIVE])
        assert reports[OBJECTIVE].iloc[:-1].isna().all()


def test_results_command_lists_trials_best_first(e2e_sweep: Sweep, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["results", str(e2e_sweep.root), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    losses = [row[OBJECTIVE] for row in rows]
    assert len(rows) == 4 and losses == sorted(losses)
    assert main(["results", str(e2e_sweep.root)]) == 0
    header = capsys.readouterr().out.splitlines()[0].split()
    assert "tokens/s" in header and "mfu" not in header
    assert main(["results", str(e2e_sweep.root), "--top", "2"]) == 0
    output = capsys.readouterr().out
    table = output.split("\n\n")[0].splitlines()
    assert table[0].split()[:4] == ["rank", "trial_id", "status", OBJECTIVE]
    assert "peak_lr" in table[0] and len(table) == 3
    assert "Knob importance for final_val_loss" in output  # four completed trials: enough to tell


def test_running_the_same_sweep_again_duplicates_nothing(e2e_sweep: Sweep) -> None:
    record = _record(e2e_sweep.root)
    client = MlflowClient(record["tracking_uri"])
    before = _points_per_child(client, record)
    again = effsweep("run", str(e2e_sweep.spec_path), "--output", str(e2e_sweep.root), "--quiet")
    assert again.returncode == 0, again.stderr[-3000:]
    assert _record(e2e_sweep.root)["parent_run_id"] == record["parent_run_id"]
    assert _points_per_child(client, record) == before
    parents = client.search_runs([record["experiment_id"]], filter_string="tags.`effsweep.sweep` = 'e2e'")
    assert len(parents) == 1


def test_another_spec_in_a_used_directory_is_refused(e2e_sweep: Sweep, tmp_path: Path) -> None:
    other = write_spec(tmp_path / "other.yaml", tiny_spec(name="e2e", trials=5))
    result = effsweep("run", str(other), "--output", str(e2e_sweep.root), "--quiet")
    assert result.returncode == 1
    assert "already holds sweep 'e2e' run from a different spec" in result.stderr


def test_a_bad_corpus_stops_the_run_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = tmp_path / "latin1.txt"
    corpus.write_bytes("first line\nprice: 5 \u00a3\n".encode("latin-1"))
    spec = write_spec(tmp_path / "spec.yaml", tiny_spec(data={"corpus": str(corpus)}))
    out = tmp_path / "out"
    assert main(["run", str(spec), "--output", str(out)]) == 1
    assert "latin1.txt: line 2 is not valid UTF-8" in capsys.readouterr().err
    assert not out.exists()


def test_divergence_and_pruning_end_trials_but_not_the_sweep(local_ray: None, tmp_path: Path) -> None:
    # One trial per status, in order: SGD at 0.1 learns, at 1e4 it diverges at once, and at 1e-6 it
    # learns nothing and ASHA stops it at its first rung against the first trial.
    raw = tiny_spec(
        name="statuses",
        output_dir=str(tmp_path / "statuses"),
        train={"eval_every": 20, "optimizer.name": "sgd", "grad_clip": 0.0, "batch_size": 8},
        search={"peak_lr": {"choice": [0.1, 1.0e4, 1.0e-6]}, "schedule.name": {"choice": ["constant"]}},
        searcher="grid",
        scheduler={"name": "asha", "grace_fraction": 0.25, "reduction_factor": 2},
        concurrency=1,
        trials=None,
    )
    outcome = run_sweep(parse_spec(raw))
    trials = outcome.results.trials.set_index("config.peak_lr")
    assert trials.loc[0.1, "status"] == "completed"
    assert trials.loc[1.0e4, "status"] == "diverged"
    assert trials.loc[1.0e-6, "status"] == "pruned"
    assert trials.loc[1.0e-6, "compute"] < 40960 and math.isnan(trials.loc[1.0e-6, OBJECTIVE])
    assert outcome.results.best()["config.peak_lr"] == 0.1

    client = MlflowClient(outcome.record.tracking_uri)
    by_status = {c.data.tags[STATUS_TAG]: c.info.status for c in _children(client, _record(outcome.layout.root))}
    assert by_status == {"completed": "FINISHED", "diverged": "FAILED", "pruned": "KILLED"}


def _grid_sweep(tmp_path: Path, name: str, search: dict, **sections: Any) -> tuple[SweepOutcome, MlflowClient, dict]:
    """Run a grid over ``search`` in-process; child runs keyed by the first knob's value."""
    raw = tiny_spec(name=name, output_dir=str(tmp_path / name), search=search, searcher="grid", trials=None, **sections)
    outcome = run_sweep(parse_spec(raw))
    client = MlflowClient(outcome.record.tracking_uri)
    first = next(iter(search))
    runs = {c.data.params[first]: c for c in _children(client, _record(outcome.layout.root))}
    return outcome, client, runs


def test_a_sweep_over_selection_logs_subset_metrics_and_pictures(local_ray: None, tmp_path: Path) -> None:
    search = {
        "selection.strategy": {"choice": ["full", "random", "uniform"]},
        "selection.fraction": {"choice": [0.5], "when": {"selection.strategy": ["random", "uniform"]}},
    }
    outcome, client, runs = _grid_sweep(tmp_path, "selection", search, train={"eval_every": 20, "batch_size": 8})
    assert outcome.results.counts()["completed"] == 3
    n_train = runs["full"].data.metrics["selection_documents"]
    assert n_train == 270  # 300 documents less the 10% held out for validation
    for strategy in ("random", "uniform"):
        run = runs[strategy]
        assert run.data.params["selection.fraction"] == "0.5"
        assert run.data.metrics["selection_documents"] == 135
        assert {"selection_h_min", "selection_mean_nn", "selection_covering_radius"} <= set(run.data.metrics)
        pictures = [a.path for a in client.list_artifacts(run.info.run_id, "selection")]
        assert pictures == [f"selection/{strategy}-135.png"]
    assert runs["uniform"].data.metrics["selection_h_min"] >= runs["random"].data.metrics["selection_h_min"]
    full_pictures = [a.path for a in client.list_artifacts(runs["full"].info.run_id, "selection")]
    assert full_pictures == ["selection/full-270.png"]
    # A trial trains on what it selected: fewer tokens, same compute.
    assert runs["uniform"].data.metrics["selection_tokens"] < runs["full"].data.metrics["selection_tokens"]
    assert runs["uniform"].data.metrics["compute"] == runs["full"].data.metrics["compute"]


def test_a_sweep_over_patch_training_shows_the_phase_switch(local_ray: None, tmp_path: Path) -> None:
    search = {"patch.K": {"choice": [1, 4]}, "patch.lambda": {"choice": [0.5], "when": {"patch.K": [4]}}}
    outcome, client, runs = _grid_sweep(
        tmp_path, "patches", search, budget={"compute": 81920}, train={"eval_every": 10, "batch_size": 8}
    )
    assert outcome.results.counts()["completed"] == 2
    switch = [m.value for m in client.get_metric_history(runs["4"].info.run_id, "patch_phase")]
    first_token = switch.index(0.0)
    assert first_token > 0 and set(switch[:first_token]) == {1.0} and set(switch[first_token:]) == {0.0}
    assert {m.value for m in client.get_metric_history(runs["1"].info.run_id, "patch_phase")} == {0.0}
    patched, plain = runs["4"].data.metrics, runs["1"].data.metrics
    assert patched["compute"] == plain["compute"] and patched["tokens"] > 1.5 * plain["tokens"]
    metrics = pd.read_parquet(outcome.layout.root / "results" / "metrics.parquet")
    assert set(metrics["phase"]) == {"patch", "token"}


def _shipped(name: str, tmp_path: Path, **sections: Any) -> dict[str, Any]:
    """A shipped spec made CI-sized: the tiny model, a small budget, its own directory."""
    raw = yaml.safe_load((REPO / "search_spaces" / f"{name}.yaml").read_text())
    raw.update(model={"size": "tiny"}, output_dir=str(tmp_path / name), **sections)
    raw["data"]["eval_tokens"] = 2048
    return raw


def test_every_schedule_and_step_rule_runs_and_logs_its_realised_rate(local_ray: None, tmp_path: Path) -> None:
    raw = _shipped("schedules", tmp_path, budget={"compute": 40960}, train={"eval_every": 10, "batch_size": 8})
    outcome = run_sweep(parse_spec(raw))
    trials = outcome.results.trials
    assert len(trials) == 15 and set(trials["status"]) == {"completed"}
    client = MlflowClient(outcome.record.tracking_uri)
    seen = set()
    for child in _children(client, _record(outcome.layout.root)):
        params = child.data.params
        # An inactive conditional knob is absent; the trial ran with its default (constant).
        seen.add((params["optimizer.name"], params.get("schedule.name", "constant")))
        rates = [m.value for m in client.get_metric_history(child.info.run_id, "lr")]
        assert rates and all(r >= 0 for r in rates) and max(rates) > 0  # power decays to exactly 0
        if params["optimizer.name"] in ("armijo_sgd", "vsgd", "dbd", "dbd_retract", "autolrs"):
            assert len(set(rates)) > 1  # the rate the rule chose, step by step
    assert len(seen) == 15
    assert {s for o, s in seen if o == "adamw"} == {
        "constant", "cosine", "wsd", "two_step", "power", "inverse_power", "one_cycle", "explore_converge"
    }  # fmt: skip


def test_the_joint_space_runs_with_tpe_and_conditional_knobs(local_ray: None, tmp_path: Path) -> None:
    raw = _shipped("joint", tmp_path, budget={"compute": 200_000}, train={"eval_every": 20}, trials=6)
    spec = parse_spec(raw)
    assert spec.searcher.name == "tpe"
    outcome = run_sweep(spec)
    trials = outcome.results.trials
    assert len(trials) == 6 and "error" not in set(trials["status"])
    for _, trial in trials.iterrows():
        config = {k.removeprefix("config."): v for k, v in trial.items() if k.startswith("config.") and v == v}
        assert ("selection.fraction" in config) == (config["selection.strategy"] != "full")
        assert ("patch.lambda" in config) == (config["patch.K"] != 1)
        schedule_knob = "schedule.name" in config and config["optimizer.name"] == "adamw"
        assert schedule_knob == (config["optimizer.name"] == "adamw")


def test_the_hooks_a_spec_turns_on() -> None:
    def names(**sections: Any) -> list[str]:
        return [type(hooks).__name__ for hooks in active_hooks(parse_spec(tiny_spec(**sections)))]

    assert names() == []
    assert names(scheduler="mpl") == ["PredictionHooks"]
    assert names(train={"target_loss": 5.0}) == ["OutpacedHooks"]  # batch_size is searched: a race to the target
    assert names(train={"target_loss": 5.0}, search={"peak_lr": {"choice": [1e-3]}}) == []


class HalfwayStopper(tune.Stopper):
    """Stops each trial at step 40 (of 80) and notes it in ``path``, one JSON line per stop."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        if result.get("step", 0) < 40:
            return False
        line = {"trial_id": trial_id, "step": int(result["step"]), "metrics": {"hooked_stop": result["step"]}}
        with open(self.path, "a") as file:
            file.write(json.dumps(line) + "\n")
        return True

    def stop_all(self) -> bool:
        return False


class StopFeed:
    """The stopper's notes as metrics for the trials' runs."""

    def __init__(self, path: Path) -> None:
        self.path, self.seen = path, 0

    def new(self) -> list[TrialMetrics]:
        lines = self.path.read_text().splitlines() if self.path.is_file() else []
        fresh, self.seen = lines[self.seen :], len(lines)
        return [TrialMetrics(**json.loads(line)) for line in fresh]


def _note_mark(path: Path, ax: Axes, trial_id: str) -> None:
    with open(path, "a") as file:
        file.write(trial_id + "\n")


class NotingHooks(SweepHooks):
    """A feature from a test module: a stopper, a metric feed, marks on the trials' curves, a parent-run file."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @classmethod
    def for_spec(cls, spec: SweepSpec) -> NotingHooks:
        return cls(spec.output_dir.resolve())

    def stoppers(self) -> list[tune.Stopper]:
        return [HalfwayStopper(self.folder / "stops.jsonl")]

    def metric_feeds(self, sweep_dir: Path) -> list[MetricFeed]:
        return [StopFeed(sweep_dir / "stops.jsonl")]

    def trial_marks(self, end: SweepEnd) -> functools.partial[None]:
        return functools.partial(_note_mark, end.layout.root / "marked.txt")

    def sweep_artifacts(self, end: SweepEnd) -> list[Path]:
        path = end.layout.results_dir / "hooked.txt"
        path.write_text(f"{len(end.results.trials)} trials\n")
        return [path]


class NotingSettings(FIFOSettings):
    """``scheduler: noting``: FIFO scheduling, with the hooks above."""

    name: Literal["noting"] = "noting"  # type: ignore[assignment]
    hooks: ClassVar[str | None] = f"{__name__}:NotingHooks"


def test_hooks_registered_from_a_test_module_extend_a_real_sweep(
    local_ray: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SCHEDULERS, "_implementations", dict(SCHEDULERS._implementations))
    SCHEDULERS.register("noting", f"{__name__}:NotingSettings")
    outcome, client, runs = _grid_sweep(
        tmp_path, "hooked", {"peak_lr": {"choice": [3e-3]}}, train={"eval_every": 20, "batch_size": 8},
        scheduler="noting",
    )  # fmt: skip
    (trial,) = outcome.results.trials.itertuples()
    assert trial.status == "pruned" and trial.step == 40  # the hook's stopper ended it halfway
    history = client.get_metric_history(runs["0.003"].info.run_id, "hooked_stop")
    assert [(m.step, m.value) for m in history] == [(40, 40.0)]  # the hook's feed, at its step
    assert (outcome.layout.root / "marked.txt").read_text() == f"{trial.trial_id}\n"
    assert "hooked.txt" in {a.path for a in client.list_artifacts(outcome.record.parent_run_id)}
    assert (outcome.layout.results_dir / "hooked.txt").read_text() == "1 trials\n"
