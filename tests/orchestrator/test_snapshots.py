"""Tune's experiment snapshots: the scheduler's checkpoint inside them, and whole copies kept against a torn one."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path
from typing import Any

import pytest
from ray import tune
from ray.tune.execution.tune_controller import TuneController
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from orchestrator.snapshots import (
    KEPT_DIR,
    SNAPSHOT_FILES,
    TUNER_FILE,
    SchedulerSnapshot,
    has_tune_snapshot,
    keep_snapshot,
    keep_tuner_file,
    newest_snapshot_files,
    restore_kept_snapshot,
)
from orchestrator.spec import parse_spec
from orchestrator.sweep import run_sweep
from tests.conftest import tiny_spec
from trainables.loop import OBJECTIVE


def test_an_asha_schedulers_rungs_come_back_in_the_scheduler_tune_restores() -> None:
    scheduler = ASHAScheduler(metric="loss", mode="min", max_t=100, grace_period=10)
    scheduler._trial_info["t1"] = scheduler._brackets[0]  # a trial the scheduler has seen
    scheduler._brackets[0]._rungs[-1][1]["t1"] = 3.5  # its result at the lowest milestone
    state = SchedulerSnapshot(scheduler).get_state()

    restored = pickle.loads(pickle.dumps(SchedulerSnapshot(ASHAScheduler(metric="loss", mode="min", max_t=100))))
    restored.set_state(state)
    assert restored.scheduler._brackets[0]._rungs[-1][1] == {"t1": 3.5}
    assert "t1" in restored.scheduler._trial_info


def test_a_scheduler_without_state_is_asked_once() -> None:
    asked = []

    class Counting(FIFOScheduler):
        def save(self, checkpoint_path: str) -> None:
            asked.append(checkpoint_path)
            super().save(checkpoint_path)

    snapshot = SchedulerSnapshot(Counting())
    assert snapshot.get_state() is None
    assert snapshot.get_state() is None
    assert len(asked) == 1


def test_a_torn_tune_snapshot_gives_way_to_the_kept_one_and_the_sweep_resumes_whole(
    local_ray: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = tiny_spec(name="torn", output_dir=str(tmp_path / "torn"), trials=3)
    turns, snapshots = _count_calls(monkeypatch, "step"), _count_calls(monkeypatch, "save_to_dir")
    first = run_sweep(parse_spec(raw))
    # Snapshots only at the turns that changed a trial: each trial's start, reports and end at least, not the
    # turns that waited for an event.
    assert 3 * 3 <= len(snapshots) < len(turns)
    experiment = first.layout.tune_dir / "torn"
    # A driver killed while Tune copied its snapshot into place: the searcher's file cut short. Restoring
    # from it, Tune would start the experiment over with no trials and a searcher that has drawn them all.
    torn = max(experiment.glob("searcher-state-*.pkl"))
    torn.write_bytes(torn.read_bytes()[: torn.stat().st_size // 2])
    # A resumed driver's snapshots copy the Tuner's file back too; cut to nothing, Tune cannot restore at all.
    (experiment / TUNER_FILE).write_bytes(b"")
    shutil.rmtree(first.layout.results_dir)

    again = run_sweep(parse_spec(raw))
    columns = ["trial_id", "status", OBJECTIVE]
    assert again.results.trials[columns].equals(first.results.trials[columns])
    assert (first.layout.results_dir / "trials.parquet").is_file()
    # Tune's own files are kept aside, not deleted.
    assert [p.name for p in experiment.glob(f"{KEPT_DIR}/replaced-*/searcher-state-*.pkl")] == [torn.name]
    assert [p.stat().st_size for p in experiment.glob(f"{KEPT_DIR}/replaced-*/{TUNER_FILE}")] == [0]
    assert (experiment / TUNER_FILE).read_bytes() == (experiment / KEPT_DIR / TUNER_FILE).read_bytes() != b""


def _count_calls(monkeypatch: pytest.MonkeyPatch, method: str) -> list[None]:
    """A list that grows by one at each call of ``TuneController.<method>``."""
    calls: list[None] = []
    original = getattr(TuneController, method)

    def counted(self: TuneController, *args: Any, **kwargs: Any) -> Any:
        calls.append(None)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(TuneController, method, counted)
    return calls


def test_a_kept_snapshot_is_the_newest_sessions_whole_set(tmp_path: Path) -> None:
    staging, experiment = tmp_path / "staging", tmp_path / "experiment"
    staging.mkdir()
    experiment.mkdir()
    for session, text in (("2026-01-01_00-00-00", "old"), ("2026-01-01_00-00-09", "new")):
        for template in SNAPSHOT_FILES:
            (staging / template.format(session)).write_text(text)
    files = newest_snapshot_files(staging)
    keep_snapshot(files, experiment, number=7)
    keep_snapshot(files, experiment, number=8)  # the next snapshot's set replaces the last one
    (folder,) = [p for p in (experiment / KEPT_DIR).iterdir() if p.is_dir()]
    assert folder.name.startswith("000000008-")
    assert {p.name: p.read_text() for p in folder.iterdir()} == {
        t.format("2026-01-01_00-00-09"): "new" for t in SNAPSHOT_FILES
    }
    (experiment / SNAPSHOT_FILES[0].format("2026-01-01_00-00-05")).write_text("torn")
    moved = restore_kept_snapshot(experiment)
    assert [p.read_text() for p in moved] == ["torn"]
    assert sorted(p.name for p in experiment.iterdir() if p.is_file()) == sorted(p.name for p in folder.iterdir())


def test_the_kept_tuner_file_is_the_staged_one_and_replaces_a_torn_one(tmp_path: Path) -> None:
    staging, experiment = tmp_path / "staging", tmp_path / "experiment"
    (experiment / KEPT_DIR).mkdir(parents=True)
    staging.mkdir()
    whole = pickle.dumps({"settings": list(range(100))})
    (staging / TUNER_FILE).write_bytes(whole)  # a resumed driver's, downloaded before its snapshots began
    (experiment / TUNER_FILE).write_bytes(whole[:10])  # its snapshot's copy back, cut short
    keep_tuner_file(staging, experiment)
    (staging / TUNER_FILE).write_bytes(b"later")
    keep_tuner_file(staging, experiment)  # kept once: the file never changes in a sweep's life
    moved = restore_kept_snapshot(experiment)
    assert [p.read_bytes() for p in moved] == [whole[:10]]
    assert (experiment / TUNER_FILE).read_bytes() == whole


def test_a_sweep_killed_before_tunes_first_snapshot_starts_afresh_and_runs_every_trial(
    local_ray: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = tiny_spec(name="early", output_dir=str(tmp_path / "early"), trials=2)

    def killed(self: tune.Tuner) -> None:  # the driver dies once Tune has written its Tuner, before any turn
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(tune.Tuner, "fit", killed)
        with pytest.raises(KeyboardInterrupt):
            run_sweep(parse_spec(raw))
    experiment = tmp_path / "early" / "tune" / "early"
    assert (experiment / TUNER_FILE).is_file() and not has_tune_snapshot(str(experiment))

    outcome = run_sweep(parse_spec(raw))
    assert list(outcome.results.trials["status"]) == ["completed", "completed"]
    assert has_tune_snapshot(str(experiment))


def test_a_whole_tuner_file_with_nothing_kept_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / TUNER_FILE).write_bytes(pickle.dumps({"settings": 1}))
    assert restore_kept_snapshot(tmp_path) == []
    assert not (tmp_path / KEPT_DIR).exists()
