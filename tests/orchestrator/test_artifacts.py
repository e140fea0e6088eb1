"""The end-of-sweep artifacts, on a hand-built sweep: real MLflow (SQLite), real Optuna fANOVA, real plots."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from orchestrator import plots
from orchestrator.cli.main import main
from orchestrator.importance import knob_importances
from orchestrator.layout import SweepLayout, SweepRecord
from orchestrator.mlflow_runs import TRIAL_ID_TAG, ensure_experiment, finish_parent_run, open_parent_run
from orchestrator.results import SweepResults, format_table
from orchestrator.spec import parse_spec
from orchestrator.sweep_artifacts import TRIAL_PLOT, log_sweep_artifacts
from tests.conftest import tiny_spec
from trainables.loop import FINAL_BITS_PER_BYTE, OBJECTIVE

STEPS = (20, 40, 60, 80)


def _loss(peak_lr: float) -> float:
    """The synthetic sweep's final loss: peak_lr alone decides it."""
    return 4.0 + math.log10(peak_lr)


def _trials(n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` completed trials of the tiny spec's space; decay_frac is set where wsd switches it on."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        schedule, lr = ("cosine", "wsd")[i % 2], float(10 ** rng.uniform(-3, -2))
        rows.append(
            {
                "trial_id": f"trial{i:02d}", "status": "completed", OBJECTIVE: _loss(lr), "val_loss": _loss(lr),
                "compute": 40960.0, "step": STEPS[-1], "error": "", "config.schedule.name": schedule,
                "config.peak_lr": lr, "config.batch_size": int(rng.choice([8, 16])),
                "config.schedule.decay_frac": float(rng.uniform(0.1, 0.3)) if schedule == "wsd" else math.nan,
            }
        )  # fmt: skip
    return pd.DataFrame(rows)


def _reports(trial_id: str, final: float, steps: tuple[int, ...]) -> list[dict[str, Any]]:
    return [
        {"trial_id": trial_id, "step": s, "compute": s * 512.0, "train_loss": final + 1.2 - s / 100,
         "val_loss": final + 1.0 - s / 100}
        for s in steps
    ]  # fmt: skip


def _results() -> SweepResults:
    """Ten completed trials, one pruned after its first report, one diverged at once, one that never reported."""
    trials = _trials(10)
    reports = [r for t in trials.itertuples() for r in _reports(t.trial_id, getattr(t, OBJECTIVE), STEPS)]
    lost = {"status": "pruned", OBJECTIVE: math.nan, "config.schedule.name": "cosine", "config.peak_lr": 1e-2,
            "config.batch_size": 8}  # fmt: skip
    trials = pd.concat(
        [trials, pd.DataFrame([lost | {"trial_id": "pruned"}, lost | {"trial_id": "diverged", "status": "diverged"},
                               lost | {"trial_id": "silent", "status": "error"}])],
        ignore_index=True,
    )  # fmt: skip
    reports += _reports("pruned", 2.5, STEPS[:1])
    reports.append(
        {"trial_id": "diverged", "step": 20, "compute": 10240.0, "train_loss": math.nan, "val_loss": math.nan}
    )
    return SweepResults(trials, pd.DataFrame(reports))


# What the MPL pruner wrote: the pruned trial was stopped on its first prediction, trial01 judged and kept.
PREDICTIONS = [
    {"trial_id": "pruned", "step": 20, "compute": 10240.0, "fraction": 0.25, "mpl_pred_final": 2.4,
     "mpl_pred_low": 2.3, "mpl_pred_high": 2.5, "stopped": True},
    {"trial_id": "trial01", "step": 20, "compute": 10240.0, "fraction": 0.25, "mpl_pred_final": 1.6,
     "mpl_pred_low": 1.4, "mpl_pred_high": 1.8, "stopped": False},
    {"trial_id": "trial01", "step": 40, "compute": 20480.0, "fraction": 0.5, "mpl_pred_final": 1.55,
     "mpl_pred_low": 1.5, "mpl_pred_high": 1.6, "stopped": False},
]  # fmt: skip


@dataclass
class Drawn:
    """What a picture showed, noted as it was saved."""

    file: str
    title: str
    lines: list[tuple[str, int]]  # each line's marker and number of points
    legend: list[str]
    errorbars: int


@dataclass
class Sweep:
    """A hand-built sweep whose end was logged twice, as when a resumed sweep ends again."""

    record: SweepRecord
    layout: SweepLayout
    client: MlflowClient
    children: dict[str, str]  # trial id -> run id
    drawn: list[Drawn]  # the pictures of the second end


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Sweep:
    """A sweep directory with a real MLflow store, its parent run and a child run per trial, logged at its end."""
    spec = parse_spec(tiny_spec(output_dir=str(tmp_path_factory.mktemp("artifacts") / "sweep"), scheduler="mpl"))
    layout = SweepLayout(spec.output_dir)
    (layout.root / "mpl").mkdir(parents=True)
    (layout.root / "mpl" / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PREDICTIONS))
    client = MlflowClient(layout.default_tracking_uri)
    experiment_id = ensure_experiment(client, spec.name, layout.artifacts_dir.as_uri())
    parent = open_parent_run(
        client, experiment_id, sweep_name=spec.name, params=spec.summary(), tags={}, previous_run_id=None
    )
    record = SweepRecord(spec.name, spec.spec_hash(), layout.default_tracking_uri, experiment_id, parent,
                         [k.name for k in spec.knobs])  # fmt: skip
    record.save(layout)
    children = {
        trial_id: client.create_run(
            experiment_id, tags={MLFLOW_PARENT_RUN_ID: parent, TRIAL_ID_TAG: trial_id}
        ).info.run_id
        for trial_id in _results().trials["trial_id"]
    }
    log_sweep_artifacts(_results(), spec, record, layout, client)
    drawn: list[Drawn] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plots, "_save", _noting(drawn))
        artifacts = log_sweep_artifacts(_results(), spec, record, layout, client)
    finish_parent_run(client, parent, metrics={}, tags={}, artifacts=artifacts)
    return Sweep(record, layout, client, children, drawn)


def _noting(drawn: list[Drawn]) -> Callable[..., Path]:
    """``plots._save`` that first notes what the figure shows in ``drawn``."""
    save = plots._save

    def note_and_save(fig: plt.Figure, path: Path, **options: Any) -> Path:
        ax = fig.axes[0]
        legend = ax.get_legend()
        drawn.append(
            Drawn(path.name, ax.get_title(), [(str(line.get_marker()), len(line.get_xdata())) for line in ax.lines],
                  [t.get_text() for t in legend.get_texts()] if legend else [], len(ax.containers))
        )  # fmt: skip
        return save(fig, path, **options)

    return note_and_save


def _artifacts(client: MlflowClient, run_id: str) -> list[str]:
    return sorted(a.path for a in client.list_artifacts(run_id))


def test_the_parent_run_gets_tables_pictures_and_importances(sweep: Sweep) -> None:
    assert _artifacts(sweep.client, sweep.record.parent_run_id) == [
        "importances.csv", "importances.png", "metrics.parquet", "mpl_predictions.png", "trials.parquet",
        "val_loss.png",
    ]  # fmt: skip
    metrics = sweep.client.get_run(sweep.record.parent_run_id).data.metrics
    assert set(metrics) == {"importance.schedule.name", "importance.peak_lr", "importance.batch_size"}
    assert max(metrics, key=metrics.get) == "importance.peak_lr"


def test_val_loss_shows_every_trial_that_reported_a_loss(sweep: Sweep) -> None:
    (picture,) = [d for d in sweep.drawn if d.file == "val_loss.png"]
    # Ten full curves and the pruned trial's single report, each point a marker; the diverged
    # trial's only loss is NaN and the silent one never reported.
    assert sorted(n for _, n in picture.lines) == [1] + [len(STEPS)] * 10
    assert {marker for marker, _ in picture.lines} == {"o"}
    assert picture.title == "13 trials, 2 with no finite loss"


def test_each_trial_that_reported_has_its_curves_once_on_its_child_run(sweep: Sweep) -> None:
    for trial_id, run_id in sweep.children.items():
        assert _artifacts(sweep.client, run_id) == ([] if trial_id == "silent" else [TRIAL_PLOT])
    curves = {d.title: d for d in sweep.drawn if d.file == TRIAL_PLOT}
    assert len(curves) == 12
    judged = curves["trial trial01: completed"]
    assert judged.errorbars == 1 and "MPL prediction of the final loss" in judged.legend
    assert judged.legend[:2] == ["train_loss", "val_loss"] and judged.legend[2].startswith(f"{OBJECTIVE} ")
    assert judged.lines[:2] == [("o", len(STEPS)), ("o", len(STEPS))]
    stopped = curves["trial pruned: pruned"]
    assert "stopped on this prediction" in stopped.legend and not any(s.startswith(OBJECTIVE) for s in stopped.legend)
    assert curves["trial trial02: completed"].errorbars == 0


def test_results_command_prints_the_importances_under_the_trials(
    sweep: Sweep, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["results", str(sweep.layout.root)]) == 0
    out = capsys.readouterr().out
    table, importances = out.split("\n\nKnob importance for final_val_loss")
    assert len(table.splitlines()) == 14  # the header and 13 trials
    assert importances.splitlines()[1].split()[0] == "peak_lr"
    assert len(importances.splitlines()) == 4


def test_the_knob_that_decides_the_loss_dominates() -> None:
    spec = parse_spec(tiny_spec())
    table = knob_importances(_trials(16), spec.knobs)
    # decay_frac is inactive in the cosine trials, so fANOVA cannot score it.
    assert table["knob"].tolist()[0] == "peak_lr" and set(table["knob"]) == {"peak_lr", "schedule.name", "batch_size"}
    assert table["importance"].iloc[0] > 0.8
    assert table["importance"].is_monotonic_decreasing and table["importance"].sum() <= 1.0


@pytest.mark.parametrize(
    "trials",
    [
        _trials(1),
        _trials(6).assign(**{OBJECTIVE: 2.0}),
        _trials(6).assign(**{"status": ["completed", "pruned", "pruned", "pruned", "pruned", "error"]}),
    ],
    ids=["one trial", "one loss", "one completed"],
)
def test_no_importances_without_something_to_explain(trials: pd.DataFrame) -> None:
    assert knob_importances(trials, parse_spec(tiny_spec()).knobs).empty


def test_no_importances_when_no_knob_varies() -> None:
    spec = parse_spec(tiny_spec(search={"batch_size": {"choice": [8, 16]}}))
    trials = _trials(4).assign(**{"config.batch_size": 8})
    assert knob_importances(trials, spec.knobs).empty


def test_the_results_table_shows_throughput_and_mfu_where_known() -> None:
    trials = pd.DataFrame(
        {"trial_id": ["a", "b"], "status": ["completed"] * 2, OBJECTIVE: [2.0, 1.0], FINAL_BITS_PER_BYTE: [2.9, 1.44],
         "compute": [1e6, 1e6], "tokens_per_s": [123_456.0, 98_765.4], "mfu": [0.412, math.nan],
         "config.peak_lr": [1e-3, 3e-3]}
    )  # fmt: skip
    lines = format_table(trials, ["peak_lr"], top=2).splitlines()
    assert lines[0].split() == [
        "rank", "trial_id", "status", OBJECTIVE, FINAL_BITS_PER_BYTE, "compute", "tokens/s", "mfu", "peak_lr",
    ]  # fmt: skip
    assert lines[1].split()[1:] == ["b", "completed", "1.0000", "1.4400", "1e+06", "98,765", "-", "0.003"]
    assert lines[2].split()[6:8] == ["123,456", "41.2%"]
    # Results written before bits per byte was reported show it as absent.
    older = format_table(trials.drop(columns=FINAL_BITS_PER_BYTE), [], top=1).splitlines()
    assert older[1].split()[4] == "-"
