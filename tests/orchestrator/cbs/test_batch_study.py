"""``effsweep cbs`` end to end on a real corpus: pilot, geometric round, refinement, fit, outputs."""

from __future__ import annotations

import json
from pathlib import Path

from mlflow.tracking import MlflowClient

from orchestrator.layout import SweepLayout, SweepRecord
from orchestrator.spec import load_spec
from tests.conftest import effsweep, tiny_spec, write_spec


def _study_spec(tmp_path: Path, compute: float = 163840) -> Path:
    raw = tiny_spec(
        name="cbs", output_dir=str(tmp_path / "cbs"), budget={"compute": compute},
        train={"eval_every": 5, "batch_size": 8, "schedule.name": "constant", "peak_lr": 3.0e-3},
        search={"seed": {"choice": [0]}}, searcher="grid", trials=None,
    )  # fmt: skip
    return write_spec(tmp_path / "cbs.yaml", raw)


def test_the_study_finds_a_critical_batch_size_and_writes_it_into_a_spec(tmp_path: Path) -> None:
    spec = _study_spec(tmp_path)
    found = tmp_path / "found.yaml"
    ran = effsweep("cbs", str(spec), "--sizes", "4,8,16,32", "--write-to", str(found))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    result = json.loads(ran.stdout.strip().splitlines()[-1])
    low, high = result["b_crit_interval"]
    assert result["b_crit"] > 0 and low <= result["b_crit"] <= high
    sizes = [p["batch_size"] for p in result["points"]]
    assert {4, 8, 16, 32} <= set(sizes) and len(sizes) > 4  # the refinement added batch sizes near the knee
    assert all(p["reached"] or p["outpaced"] for p in result["points"]) and result["gns"] > 0
    # An outpaced trial was stopped by a smaller batch size that had reached the target. (Which trials
    # are outpaced depends on how the round's trials interleave in time, so no more is asserted.)
    reached_sizes = [p["batch_size"] for p in result["points"] if p["reached"]]
    assert all(min(reached_sizes) < p["batch_size"] for p in result["points"] if p["outpaced"])
    assert all(p["reached"] for p in result["points"] if p["fitted"])
    assert [r.split("/")[-1] for r in result["rounds"]] == ["pilot", "round-1", "round-2"]
    written = load_spec(found)
    assert written.train["batch_size"] == max(1, round(result["b_crit"]))
    assert "batch_size" not in {k.name for k in written.knobs}
    assert (tmp_path / "cbs" / "cbs.png").is_file() and (tmp_path / "cbs" / "cbs.json").is_file()
    record = SweepRecord.load(SweepLayout(Path(result["rounds"][-1])))
    artifacts = {a.path for a in MlflowClient(record.tracking_uri).list_artifacts(record.parent_run_id)}
    assert {"cbs.png", "cbs.json"} <= artifacts


def test_an_unreachable_target_gets_a_clear_message(tmp_path: Path) -> None:
    # No trial reaches the target, so each runs its whole budget: a small one (10 steps at batch 32).
    ran = effsweep("cbs", str(_study_spec(tmp_path, compute=20480)), "--sizes", "8,16,32", "--target", "0.5")
    assert ran.returncode == 1
    assert "only 0 of 3 batch sizes reached the target loss 0.5000 within budget.compute" in ran.stderr
