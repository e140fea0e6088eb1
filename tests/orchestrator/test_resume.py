"""A sweep killed at its riskiest moments and resumed ends as if it had never been killed.

The harness is ``benchmarks/crash.py`` run whole, as its ``--smoke``: ``kill
-9`` of the whole ``effsweep`` process group at named moments (a trial's
first report, right after a trial completes, right after a pruning
decision, during the final export), each followed by ``effsweep resume``,
then the resumed sweep against an uninterrupted run of the same spec. This
is also the benchmark's smoke run, so ``tests/benchmarks`` leaves it out.
"""

from __future__ import annotations

import pytest

from tests.benchmark_runs import BenchmarkRuns

pytestmark = pytest.mark.slow  # whole sweeps killed and resumed

# What a resumed sweep must show against the uninterrupted one.
EXPECTED = {
    "lost_trials": 0,
    "duplicate_child_runs": 0,
    "duplicate_metric_rows": 0,
    "orphaned_runs": 0,
    "incomplete_exports": 0,  # every report of every trial, as the uninterrupted sweep has them
    "unfinished_parents": 0,
    "decisions_match_fraction": 1.0,
}
# The keys of the benchmark's last line, the figures quoted in docs/benchmarks.md among them.
KEYS = {"kills", "sweeps", "scheduler", "trials", "at", "uninterrupted_s", *EXPECTED}


def _killed_and_resumed(scheduler: str, trials: int) -> object:
    run = pytest.mark.benchmark_run("crash", "--smoke", "--scheduler", scheduler, "--trials", trials)
    return pytest.param(scheduler, marks=run, id=f"{scheduler}-{trials}")


@pytest.mark.parametrize("scheduler", [_killed_and_resumed("asha", 6), _killed_and_resumed("mpl", 5)])
def test_a_sweep_killed_at_every_risky_moment_resumes_as_if_never_killed(
    scheduler: str, benchmark_runs: BenchmarkRuns, request: pytest.FixtureRequest
) -> None:
    result = benchmark_runs.result(request.node)
    assert result.keys() >= KEYS, f"missing {sorted(KEYS - result.keys())}"
    assert result["scheduler"] == scheduler
    assert result["kills"] >= 3, "the driver must die mid-sweep for this test to mean anything"
    assert {key: result[key] for key in EXPECTED} == EXPECTED, result
