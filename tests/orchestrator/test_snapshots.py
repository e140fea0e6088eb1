"""The scheduler's checkpoint carried inside Tune's experiment snapshot, with Tune's real schedulers."""

from __future__ import annotations

import pickle

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from orchestrator.snapshots import SchedulerSnapshot


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
