"""Kill a seeded sweep's driver at random moments, resume it each time, and compare with an uninterrupted run.

Each kill is ``kill -9`` of the whole ``effsweep run`` (or ``resume``)
process group, as an OOM killer would end it, at a moment drawn uniformly
over 5 to 90% of the uninterrupted sweep's wall time, counted from the
start of the process it kills. Each sweep is killed up to ``--per-sweep``
times in a row, each kill followed by ``effsweep resume`` (``run`` again
when the kill came before the sweep had its directory), the last resume to
the end; sweeps go on until ``--kills`` kills have landed. ``--at`` kills
one sweep at named moments instead, its riskiest ones in turn (a trial's
first report, right after a trial completes, right after a pruning
decision, during the final export); ``--smoke`` is ``--at`` all four, which
``make test`` runs (``tests/orchestrator/test_resume.py``) for both
schedulers. Counted, summed over sweeps:

- ``lost_trials``: trials of the uninterrupted sweep that the resumed one lacks;
- ``duplicate_child_runs``: MLflow child runs beyond one per trial;
- ``duplicate_metric_rows``: (run, metric, step) points logged more than once,
  in the trials' child runs or the sweep's parent run;
- ``orphaned_runs``: child runs left RUNNING, or of no trial of the sweep;
- ``incomplete_exports``: resumed sweeps whose Parquet export holds other
  than the uninterrupted run's number of reports;
- ``unfinished_parents``: resumed sweeps whose MLflow parent run did not end
  FINISHED;
- ``decisions_match_fraction``: the share of resumed sweeps whose trials
  (configs, statuses, final losses) equal the uninterrupted run's.

Run: ``.venv/bin/python benchmarks/crash.py [--kills 20] [--scheduler asha|mpl] [--at first-report,export]
[--smoke]`` (about a minute a kill); the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from smoke import add_smoke_flag

REPO = Path(__file__).resolve().parent.parent
EFFSWEEP = [sys.executable, "-m", "orchestrator.cli"]

# Six trials of the tiny model drawn by a seeded random searcher, one at a time, each of 80 steps at batch 8.
SPEC: dict[str, Any] = {
    "data": {"corpus": "gensim:lee_background", "val_fraction": 0.1, "eval_tokens": 2048},
    "model": {"size": "tiny"},
    "budget": {"compute": 40960},
    "train": {"eval_every": 10},
    "search": {
        "schedule.name": {"choice": ["cosine", "wsd"]},
        "peak_lr": {"loguniform": [1.0e-4, 3.0e-2]},
        "batch_size": {"choice": [8, 16]},
    },
    "searcher": {"name": "random", "seed": 0},
    "trials": 6,
    "concurrency": 1,
}
SCHEDULERS: dict[str, Any] = {
    "asha": {"name": "asha", "grace_fraction": 0.2, "reduction_factor": 2},
    "mpl": {"name": "mpl", "fractions": [0.3, 0.6], "min_completed": 2},
}

# A moment to kill at, judged from the sweep directory and the seconds since the process started.
Trigger = Callable[[Path, float], bool]
# The moments to kill one sweep at, as labels for the report and as triggers.
KillPlan = tuple[list[Any], list[Trigger]]


def write_spec(folder: Path, name: str, scheduler: str, trials: int = 6) -> Path:
    spec = {"name": name, **SPEC, "scheduler": SCHEDULERS[scheduler], "trials": trials}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    """The real CLI in a fresh process, to the end."""
    done = subprocess.run([*EFFSWEEP, *args, "--quiet"], cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(
            f"effsweep {' '.join(args)} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
        )
    return done


def run_until(trigger: Trigger, *args: str, timeout: float = 1800) -> bool:
    """Start the CLI in its own process group and kill the group when ``trigger`` fires; whether it fired."""
    out_dir = Path(args[args.index("--output") + 1]) if "--output" in args else Path(args[-1])
    # Its messages go to a file beside the sweep, not a pipe: a pipe nobody reads would block it.
    with open(out_dir.with_name(f"{out_dir.name}.stderr"), "a+") as errors:
        process = subprocess.Popen(
            [*EFFSWEEP, *args, "--quiet"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=errors,
            start_new_session=True,
        )  # fmt: skip
        started = time.monotonic()
        while process.poll() is None:
            if trigger(out_dir, time.monotonic() - started):
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                return True
            if time.monotonic() - started > timeout:
                os.killpg(process.pid, signal.SIGKILL)
                raise TimeoutError(f"effsweep {' '.join(args)} ran past {timeout} s")
            time.sleep(0.01)
        if process.returncode != 0:
            errors.seek(0)
            raise RuntimeError(
                f"effsweep {' '.join(args)} failed ({process.returncode}) before its kill:\n{errors.read()[-4000:]}"
            )
    return False


def after_seconds(seconds: float) -> Trigger:
    return lambda out_dir, elapsed: elapsed >= seconds


def journal_event(op: str, *, status: str | None = None, first_of_trial: bool = False) -> Trigger:
    """The moment a new journaled MLflow write of kind ``op`` appears (a report, or a trial's end with ``status``)."""
    seen: dict[str, Any] = {}

    def fired(out_dir: Path, elapsed: float) -> bool:
        journal = out_dir / "tracking" / "journal.jsonl"
        if not journal.is_file():
            return False
        text = journal.read_text()
        start = seen.setdefault("offset", len(text))  # only what this process writes counts
        earlier = {json.loads(line).get("trial") for line in text[:start].splitlines() if '"metrics"' in line}
        for line in text[start:].splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if entry["op"] != op or (status is not None and entry.get("status") != status):
                continue
            if not first_of_trial or entry["trial"] not in earlier:
                return True
        return False

    return fired


def export_started(out_dir: Path, elapsed: float) -> bool:
    return (out_dir / "results").is_dir()


# The riskiest moments to kill at, by name: each a fresh trigger, as a journal trigger remembers what it saw.
NAMED_MOMENTS: dict[str, Callable[[], Trigger]] = {
    "first-report": lambda: journal_event("metrics", first_of_trial=True),  # during a trial's first report
    "completed": lambda: journal_event("finish", status="completed"),  # right after a trial completes
    "pruned": lambda: journal_event("finish", status="pruned"),  # right after a pruning decision
    "export": lambda: export_started,  # during the final export
}


def outcome(out_dir: Path) -> dict[str, Any]:
    """The trials (by config) and the MLflow bookkeeping of a finished sweep."""
    trials = pd.read_parquet(out_dir / "results" / "trials.parquet")
    record = json.loads((out_dir / "sweep.json").read_text())
    knobs = [f"config.{knob}" for knob in record["knobs"]]
    by_config = {
        json.dumps([_plain(row[k]) for k in knobs]): (row["status"], _plain(row["final_val_loss"]))
        for _, row in trials.iterrows()
    }
    with sqlite3.connect(out_dir / "mlflow.db") as db:
        runs = db.execute(
            "SELECT r.run_uuid, r.status, t.value FROM runs r "
            "JOIN tags p ON p.run_uuid = r.run_uuid AND p.key = 'mlflow.parentRunId' AND p.value = ? "
            "LEFT JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = 'effsweep.trial_id' "
            "WHERE r.lifecycle_stage = 'active'",
            (record["parent_run_id"],),
        ).fetchall()
        ids = [record["parent_run_id"], *(run_id for run_id, _, _ in runs)]
        marks = ",".join("?" * len(ids))
        duplicates = db.execute(
            f"SELECT COALESCE(SUM(n - 1), 0) FROM (SELECT COUNT(*) AS n FROM metrics WHERE run_uuid IN ({marks}) "
            "GROUP BY run_uuid, key, step HAVING n > 1)",
            ids,
        ).fetchone()[0]
        parent_status = db.execute("SELECT status FROM runs WHERE run_uuid = ?", (record["parent_run_id"],)).fetchone()
    trial_ids = set(trials["trial_id"])
    run_trials = [trial for _, _, trial in runs]
    return {
        "trials": by_config,
        "reports": len(pd.read_parquet(out_dir / "results" / "metrics.parquet")),
        "parent_status": parent_status[0],
        "duplicate_child_runs": len(run_trials) - len(set(run_trials)),
        "duplicate_metric_rows": int(duplicates),
        "orphaned_runs": sum(status == "RUNNING" or trial not in trial_ids for _, status, trial in runs),
        "lost_trials": len(trial_ids - set(run_trials)),
    }


def _plain(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 6)
    return value.item() if hasattr(value, "item") else value


def crash_and_resume(spec: Path, out_dir: Path, triggers: list[Trigger]) -> int:
    """Run the sweep into ``out_dir``, killing it at each trigger in turn and resuming; how many kills landed."""
    kills = 0
    for trigger in triggers:
        kills += run_until(trigger, *_continue(spec, out_dir))
    run(*_continue(spec, out_dir))
    return kills


def _continue(spec: Path, out_dir: Path) -> tuple[str, ...]:
    """``resume`` once the sweep has its directory; before that (killed early, or not started) ``run`` again."""
    if (out_dir / "sweep.json").is_file():
        return ("resume", str(out_dir))
    return ("run", str(spec), "--output", str(out_dir))


def compare(reference: dict[str, Any], resumed: dict[str, Any]) -> dict[str, Any]:
    lost = len(set(reference["trials"]) - set(resumed["trials"])) + resumed["lost_trials"]
    return {
        "lost_trials": lost,
        "duplicate_child_runs": resumed["duplicate_child_runs"],
        "duplicate_metric_rows": resumed["duplicate_metric_rows"],
        "orphaned_runs": resumed["orphaned_runs"],
        "incomplete_exports": int(resumed["reports"] != reference["reports"]),
        "unfinished_parents": int(resumed["parent_status"] != "FINISHED"),
        "decisions_match": resumed["trials"] == reference["trials"],
    }


def kill_plans(args: argparse.Namespace, rng: random.Random, whole_s: float) -> Iterator[KillPlan]:
    """The moments to kill each sweep at, sweep after sweep: the named ones (one sweep), else random ones."""
    if args.at:
        yield args.at, [NAMED_MOMENTS[name]() for name in args.at]
        return
    while True:
        # Each moment is counted from the start of the process it kills (the run, then each resume).
        moments = [round(rng.uniform(0.05, 0.9) * whole_s, 1) for _ in range(args.per_sweep)]
        yield moments, [after_seconds(moment) for moment in moments]


def _moments(text: str) -> list[str]:
    names = text.split(",")
    unknown = [name for name in names if name not in NAMED_MOMENTS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown moment(s) {unknown}; choose from {sorted(NAMED_MOMENTS)}")
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="kills that land, at least")
    parser.add_argument("--per-sweep", type=int, default=2, help="kills tried in each sweep, one after the other")
    parser.add_argument("--scheduler", choices=sorted(SCHEDULERS), default="asha")
    parser.add_argument("--trials", type=int, default=6, help="trials of each sweep")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument(
        "--at", type=_moments, default=None,
        help=f"kill one sweep at these named moments in turn, comma-separated ({', '.join(NAMED_MOMENTS)})",
    )  # fmt: skip
    parser.add_argument("--workdir", type=Path, default=None, help="keep the sweeps here (default: a temporary folder)")
    add_smoke_flag(parser)
    args = parser.parse_args()
    if args.smoke:
        args.at = list(NAMED_MOMENTS)
    rng = random.Random(args.seed)
    with _workdir(args.workdir) as root:
        os.environ.setdefault("EFFSWEEP_CACHE_DIR", str(root / "cache"))
        spec = write_spec(root, "crash", args.scheduler, args.trials)
        started = time.monotonic()
        run("run", str(spec), "--output", str(root / "reference"))
        whole_s = time.monotonic() - started
        reference = outcome(root / "reference")
        rows: list[dict[str, Any]] = []
        for moments, triggers in kill_plans(args, rng, whole_s):
            out_dir = root / f"killed-{len(rows)}"
            landed = crash_and_resume(spec, out_dir, triggers)
            rows.append(compare(reference, outcome(out_dir)) | {"kills": landed, "kill_at": moments})
            print(json.dumps(rows[-1]), file=sys.stderr)
            if sum(row["kills"] for row in rows) >= args.kills:
                break
    totals = {key: sum(row[key] for row in rows) for key in rows[0] if key not in ("decisions_match", "kill_at")}
    print(
        json.dumps(
            {
                **totals,
                "sweeps": len(rows),
                "scheduler": args.scheduler,
                "trials": args.trials,
                "at": args.at,
                "uninterrupted_s": round(whole_s, 1),
                "decisions_match_fraction": sum(row["decisions_match"] for row in rows) / len(rows),
            }
        )
    )


@contextmanager
def _workdir(kept: Path | None) -> Iterator[Path]:
    """``kept`` (made, never emptied: a failed sweep stays there to be read), else a temporary folder."""
    if kept is not None:
        kept.mkdir(parents=True, exist_ok=True)
        yield kept.resolve()
        return
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp)


if __name__ == "__main__":
    main()
