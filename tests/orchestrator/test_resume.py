"""A sweep killed at its riskiest moments and resumed ends as if it had never been killed.

The kills are ``kill -9`` of the whole ``effsweep`` process group at named
moments (a trial's first report, right after a trial completes, right after
a pruning decision, during the final export), each followed by ``effsweep
resume``; the harness is ``benchmarks/crash.py``'s, which also kills at
random moments.
"""

from __future__ import annotations

from pathlib import Path

import crash
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from orchestrator.layout import SweepLayout, SweepRecord

pytestmark = pytest.mark.slow  # whole sweeps killed and resumed


@pytest.mark.parametrize(("scheduler", "trials"), [("asha", 6), ("mpl", 5)])
def test_a_sweep_killed_at_every_risky_moment_resumes_as_if_never_killed(
    tmp_path: Path, scheduler: str, trials: int
) -> None:
    spec = crash.write_spec(tmp_path, f"killed-{scheduler}", scheduler, trials)
    crash.run("run", str(spec), "--output", str(tmp_path / "whole"))
    reference = crash.outcome(tmp_path / "whole")

    killed = tmp_path / "killed"
    moments = [
        crash.journal_event("metrics", first_of_trial=True),  # during a trial's first report
        crash.journal_event("finish", status="completed"),  # right after a trial completes
        crash.journal_event("finish", status="pruned"),  # right after a pruning decision
        crash.export_started,  # during the final export
    ]
    kills = crash.crash_and_resume(spec, killed, moments)
    assert kills >= 3, "the driver must die mid-sweep for this test to mean anything"

    resumed = crash.outcome(killed)
    assert crash.compare(reference, resumed) == {
        "lost_trials": 0,
        "duplicate_child_runs": 0,
        "duplicate_metric_rows": 0,
        "orphaned_runs": 0,
        "decisions_match": True,
    }, (reference["trials"], resumed["trials"])
    # The export is whole: every report of every trial, as the uninterrupted sweep has them.
    whole_reports = pd.read_parquet(tmp_path / "whole" / "results" / "metrics.parquet")
    resumed_reports = pd.read_parquet(killed / "results" / "metrics.parquet")
    assert len(resumed_reports) == len(whole_reports)
    record = SweepRecord.load(SweepLayout(killed))
    assert MlflowClient(record.tracking_uri).get_run(record.parent_run_id).info.status == "FINISHED"
