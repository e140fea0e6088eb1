"""MLflow tracking against a real SQLite store: batching, child-run lookup, experiment kind, the journaled writer."""

from __future__ import annotations

import functools
import os
import queue
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from orchestrator import sqlite_store
from orchestrator.mlflow_runs import (
    TRIAL_ID_TAG,
    MetricBatcher,
    child_runs,
    ensure_experiment,
    open_parent_run,
    tracking_client,
)
from orchestrator.run_writer import WRITER_NICENESS, RunWriter
from orchestrator.store_writer import RECONCILED_TAG, STATUS_TAG, StoreWriter


@pytest.fixture()
def client(tmp_path: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")


class CountingClient:
    """The real client, with its log_batch calls counted."""

    def __init__(self, client: MlflowClient) -> None:
        self.client = client
        self.batches: list[int] = []

    def log_batch(self, run_id: str, metrics: list) -> None:
        self.batches.append(len(metrics))
        self.client.log_batch(run_id, metrics=metrics)


def test_points_go_in_batches_of_at_most_1000(client: MlflowClient) -> None:
    run_id = client.create_run(ensure_experiment(client, "batching", None)).info.run_id
    counting = CountingClient(client)
    batcher = MetricBatcher(counting, flush_interval_s=3600)  # type: ignore[arg-type]
    for step in range(250):
        batcher.add(run_id, {f"m{i}": step + i / 10 for i in range(10)}, step=step, timestamp_ms=step)
    assert counting.batches == [] and batcher.due()
    batcher.flush()
    assert counting.batches == [1000, 1000, 500]
    history = client.get_metric_history(run_id, "m3")
    assert [m.step for m in history] == list(range(250))
    assert history[7].value == pytest.approx(7.3)


def test_flush_is_due_by_size_or_by_age(client: MlflowClient) -> None:
    batcher = MetricBatcher(client, flush_interval_s=0.0, max_points=5)
    assert not batcher.due()  # nothing buffered
    batcher.add("run", {"a": 1.0}, step=0, timestamp_ms=0)
    assert batcher.due()  # old enough at interval 0
    slow = MetricBatcher(client, flush_interval_s=3600, max_points=5)
    slow.add("run", {k: 1.0 for k in "abcd"}, step=0, timestamp_ms=0)
    assert not slow.due()
    slow.add("run", {"e": 1.0}, step=0, timestamp_ms=0)
    assert slow.due()
    with pytest.raises(ValueError, match="max_points must be in"):
        MetricBatcher(client, max_points=5000)


def test_child_runs_are_found_by_trial_tag(client: MlflowClient) -> None:
    experiment = ensure_experiment(client, "sweep", None)
    parent = open_parent_run(client, experiment, sweep_name="s", params={"a": 1}, tags={}, previous_run_id=None)
    other = open_parent_run(client, experiment, sweep_name="t", params={}, tags={}, previous_run_id=None)
    for trial in ("t1", "t2"):
        client.create_run(experiment, tags={MLFLOW_PARENT_RUN_ID: parent, TRIAL_ID_TAG: trial})
    client.create_run(experiment, tags={MLFLOW_PARENT_RUN_ID: other, TRIAL_ID_TAG: "t3"})
    found = child_runs(client, experiment, parent)
    assert sorted(found) == ["t1", "t2"]
    # A sweep run again gets its parent run back instead of a new one.
    again = open_parent_run(client, experiment, sweep_name="s", params={"a": 1}, tags={}, previous_run_id=parent)
    assert again == parent


def test_experiments_open_on_their_runs_table(client: MlflowClient) -> None:
    experiment = ensure_experiment(client, "kind", None)
    assert client.get_experiment(experiment).tags["mlflow.experimentKind"] == "custom_model_development"
    assert ensure_experiment(client, "kind", None) == experiment


def _writer(client: MlflowClient, tmp_path: Path) -> tuple[RunWriter, str, str]:
    experiment = ensure_experiment(client, "writer", None)
    parent = open_parent_run(client, experiment, sweep_name="w", params={}, tags={}, previous_run_id=None)
    return RunWriter(client.tracking_uri, experiment, parent, tmp_path / "journal.jsonl"), experiment, parent


def _steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return [m.step for m in client.get_metric_history(run_id, key)]


def test_a_replayed_journal_sends_what_a_killed_driver_left_and_nothing_twice(
    client: MlflowClient, tmp_path: Path
) -> None:
    writer, experiment, parent = _writer(client, tmp_path)
    writer.open_trial("t1", "one", {"lr": 0.1}, live=["t1"])
    for step in (10, 20):
        writer.log_metrics("t1", {"val_loss": 3.0 - step / 100}, step=step, timestamp_ms=step)
    writer.close()
    # A driver killed before its writer sent these leaves them journaled only (the last line cut short).
    with open(tmp_path / "journal.jsonl", "a") as journal:
        journal.write('{"op": "metrics", "trial": "t1", "step": 30, "ts": 30, "values": {"val_loss": 2.7}}\n')
        journal.write('{"op": "finish", "trial": "t1", "status": "completed", "vectors": {}}\n{"op": "metr')
    run_id = child_runs(client, experiment, parent)["t1"]
    assert _steps(client, run_id, "val_loss") == [10, 20] and client.get_run(run_id).info.status == "RUNNING"

    resumed = RunWriter(client.tracking_uri, experiment, parent, tmp_path / "journal.jsonl")
    resumed.log_metrics("t1", {"val_loss": 2.8}, step=20, timestamp_ms=99)  # a trial's report seen again
    resumed.close()
    assert child_runs(client, experiment, parent) == {"t1": run_id}
    assert _steps(client, run_id, "val_loss") == [10, 20, 30]
    assert client.get_run(run_id).info.status == "FINISHED"
    assert client.get_run(run_id).data.tags[STATUS_TAG] == "completed"


def test_a_run_of_a_trial_tune_never_recorded_is_taken_over_or_ended(client: MlflowClient, tmp_path: Path) -> None:
    writer, experiment, parent = _writer(client, tmp_path)
    # Runs opened for trials that a killed driver started before its last snapshot.
    writer.open_trial("lost-a", "a", {"lr": 0.1}, live=["lost-a"])
    writer.open_trial("lost-b", "b", {"lr": 0.2}, live=["lost-a", "lost-b"])
    writer.log_metrics("lost-a", {"val_loss": 3.0}, step=10, timestamp_ms=1)
    writer.close()
    taken = child_runs(client, experiment, parent)["lost-a"]

    # The resumed sweep suggests lr 0.1 again, as trial "new-a"; it never sees lr 0.2 again.
    resumed = RunWriter(client.tracking_uri, experiment, parent, tmp_path / "journal.jsonl")
    resumed.open_trial("new-a", "a", {"lr": 0.1}, live=["new-a"])
    resumed.log_metrics("new-a", {"val_loss": 3.0}, step=10, timestamp_ms=2)
    resumed.finish_trial("new-a", "completed")
    resumed.reconcile({"new-a": "completed"})
    resumed.close()
    assert child_runs(client, experiment, parent) == {"new-a": taken}  # one run per trial, none orphaned
    assert _steps(client, taken, "val_loss") == [10]
    assert "lost-a" in client.get_run(taken).data.tags[RECONCILED_TAG]
    [gone] = client.search_runs([experiment], run_view_type=ViewType.DELETED_ONLY)
    assert gone.data.tags[TRIAL_ID_TAG] == "lost-b" and gone.info.status == "KILLED"
    # The journal forgets both old trial ids, so a later replay neither re-creates nor revives them.
    again = RunWriter(client.tracking_uri, experiment, parent, tmp_path / "journal.jsonl")
    again.close()
    assert child_runs(client, experiment, parent) == {"new-a": taken}
    assert client.get_run(taken).info.status == "FINISHED"


def _serving(client: MlflowClient, tmp_path: Path, window_s: float) -> tuple[queue.Queue, list[int], str, str]:
    """A store writer serving ops from a queue on a thread; the sizes of its metric transactions are recorded."""
    experiment = ensure_experiment(client, "window", None)
    parent = open_parent_run(client, experiment, sweep_name="w", params={}, tags={}, previous_run_id=None)
    batches: list[int] = []
    send = client.log_batch

    def counted(run_id: str, metrics: list = (), **kwargs: object) -> None:
        send(run_id, metrics=metrics, **kwargs)
        if metrics:  # counted once in the store, so that a test seeing the count can read the points
            batches.append(len(metrics))

    client.log_batch = counted  # type: ignore[method-assign]
    writer = StoreWriter(client, experiment, parent, tmp_path / "journal.jsonl", None, batch_window_s=window_s)
    ops: queue.Queue = queue.Queue()
    threading.Thread(target=writer.serve, args=(ops, lambda flush: None), daemon=True).start()
    ops.put({"op": "open", "trial": "t1", "name": "one", "config": {}, "live": ["t1"]})
    return ops, batches, experiment, parent


def test_reports_arriving_one_by_one_go_to_the_store_as_one_transaction(client: MlflowClient, tmp_path: Path) -> None:
    ops, batches, experiment, parent = _serving(client, tmp_path, window_s=3600)
    for step in range(20):  # a trial's reports, each alone in the queue when it arrives
        ops.put({"op": "metrics", "trial": "t1", "step": step, "ts": step, "values": {"loss": 1.0, "lr": 0.1}})
        time.sleep(0.02)
    ops.put({"op": "finish", "trial": "t1", "status": "completed", "vectors": {}})
    ops.put(None)
    deadline = time.monotonic() + 60
    while not batches and time.monotonic() < deadline:
        time.sleep(0.05)
    assert batches == [40]  # held for the window, sent once when the trial finished
    assert _steps(client, child_runs(client, experiment, parent)["t1"], "loss") == list(range(20))


def test_a_report_reaches_the_store_once_its_window_closes_without_a_flush(
    client: MlflowClient, tmp_path: Path
) -> None:
    ops, batches, experiment, parent = _serving(client, tmp_path, window_s=0.2)
    ops.put({"op": "metrics", "trial": "t1", "step": 5, "ts": 5, "values": {"loss": 1.0}})
    deadline = time.monotonic() + 60
    while not batches and time.monotonic() < deadline:
        time.sleep(0.05)
    ops.put(None)
    assert batches == [1]
    assert _steps(client, child_runs(client, experiment, parent)["t1"], "loss") == [5]


def _hang_until(gate: Path, client: MlflowClient, run_id: str, config: dict) -> None:
    """An ``on_open`` that holds the writer, as a store that stops answering would."""
    while not gate.exists():
        time.sleep(0.05)


def test_a_slow_store_does_not_hold_up_the_callers(client: MlflowClient, tmp_path: Path) -> None:
    experiment = ensure_experiment(client, "writer", None)
    parent = open_parent_run(client, experiment, sweep_name="w", params={}, tags={}, previous_run_id=None)
    gate = tmp_path / "answer"
    writer = RunWriter(
        client.tracking_uri,
        experiment,
        parent,
        tmp_path / "journal.jsonl",
        on_open=functools.partial(_hang_until, gate),
    )
    writer.open_trial("t1", "one", {}, live=["t1"])
    for step in range(200):
        writer.log_metrics("t1", {"loss": float(step)}, step=step, timestamp_ms=step)
    assert not writer.flush(timeout_s=0.5)  # nothing reached the store yet, and no caller waited for it
    gate.touch()
    writer.close()
    assert _steps(client, child_runs(client, experiment, parent)["t1"], "loss") == list(range(200))


def test_the_writer_process_yields_the_cpu_to_the_driver_and_its_trials(client: MlflowClient, tmp_path: Path) -> None:
    writer, _, _ = _writer(client, tmp_path)
    assert writer.flush(timeout_s=60)  # the process has started serving
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    assert writer.pid != os.getpid()
    assert os.getpriority(os.PRIO_PROCESS, writer.pid) == max(ours, WRITER_NICENESS)
    writer.close()
    assert os.getpriority(os.PRIO_PROCESS, 0) == ours  # the caller's own is untouched


def test_a_writer_whose_driver_died_stops_instead_of_writing_beside_the_next(tmp_path: Path) -> None:
    # A driver killed with SIGKILL leaves its writer behind; a resume's writer must be the only one.
    driver = subprocess.Popen(
        [sys.executable, "-c", _ORPHANING_DRIVER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    writer_pid = int(driver.stdout.readline())
    driver.kill()
    driver.wait()
    deadline = time.monotonic() + 60
    while _alive(writer_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(writer_pid)


_ORPHANING_DRIVER = """
import sys, time
from pathlib import Path
from mlflow.tracking import MlflowClient
from orchestrator.run_writer import RunWriter
folder = Path(sys.argv[1])
client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
experiment = client.create_experiment("orphan")
writer = RunWriter(client.tracking_uri, experiment, client.create_run(experiment).info.run_id, folder / "j.jsonl")
assert writer.flush(timeout_s=120)
print(writer.pid, flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by init) counts as gone.
    return "Z" not in Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]


def test_a_new_sqlite_store_appears_whole_or_not_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EFFSWEEP_CACHE_DIR", str(tmp_path / "cache"))  # no empty store cached yet
    db = tmp_path / "sweep" / "mlflow.db"
    real_store = sqlite_store.SqlAlchemyStore

    def killed_while_migrating(uri: str, artifact_root: str) -> None:
        real_store(uri, artifact_root)  # the tables exist in the partial file...
        raise KeyboardInterrupt  # ...and the process dies before the rename

    with monkeypatch.context() as patched:
        patched.setattr(sqlite_store, "SqlAlchemyStore", killed_while_migrating)
        with pytest.raises(KeyboardInterrupt):
            tracking_client(f"sqlite:///{db}")
    assert not db.exists() and not list((tmp_path / "cache").glob("*.db"))  # nothing half-made to trip on
    client = tracking_client(f"sqlite:///{db}")
    assert db.is_file() and ensure_experiment(client, "whole", None)
    assert tracking_client(f"sqlite:///{db}").get_experiment_by_name("whole") is not None  # an existing one is used


def test_new_stores_are_copies_of_one_migrated_store_each_with_its_own_default_experiment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EFFSWEEP_CACHE_DIR", str(tmp_path / "cache"))
    migrations = []
    real_store = sqlite_store.SqlAlchemyStore
    monkeypatch.setattr(sqlite_store, "SqlAlchemyStore", lambda *args: migrations.append(args) or real_store(*args))
    clients = {name: tracking_client(f"sqlite:///{tmp_path / name / 'mlflow.db'}") for name in ("a", "b")}
    assert len(migrations) == 1  # the first new store migrates the cached one; the second is a copy
    monkeypatch.undo()
    # What MLflow makes in place, with the store's folder as its artifact root, for comparison.
    in_place = real_store(f"sqlite:///{tmp_path / 'in-place.db'}", tmp_path.as_uri())
    in_place.engine.dispose()

    def schema(db: Path) -> dict[str, list[tuple]]:
        """Each table's columns (name, type, not null, default, key) and the names of the indexes.

        Not the CREATE statements: MLflow's migrations write a table's constraints in no fixed order.
        """
        with sqlite3.connect(db) as connection:
            tables = [name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            indexes = connection.execute("SELECT name FROM sqlite_master WHERE type = 'index' ORDER BY name")
            columns = {t: [c[1:] for c in connection.execute(f'PRAGMA table_info("{t}")')] for t in sorted(tables)}
            return {**columns, "indexes": indexes.fetchall()}

    assert schema(tmp_path / "a" / "mlflow.db") == schema(tmp_path / "in-place.db")
    for name, client in clients.items():
        default = client.get_experiment("0")
        assert default.name == "Default" and default.artifact_location == f"{(tmp_path / name).as_uri()}/0"
        assert time.time() - default.creation_time / 1000 < 600  # made now, not when the cached store was
        run = client.create_run(ensure_experiment(client, name, None)).info.run_id
        client.log_metric(run, "val_loss", 1.5, step=3)
        assert [(m.step, m.value) for m in client.get_metric_history(run, "val_loss")] == [(3, 1.5)]
