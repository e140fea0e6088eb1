"""A two-worker trial's reports reach Tune, all of them, and the trial ends, however slowly Tune takes them.

With Ray's own ``TuneReportCallback`` a Tune callback that takes seconds over each result hung this
trial after its last report (``trainables.report_relay`` says why).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import ray
from ray import tune

from tests.conftest import TINY_32
from trainables.config import TrialConfig
from trainables.data.prepare import SweepData
from trainables.loop import train_lm
from trainables.report_relay import CHECKPOINT_PATH_KEY
from trainables.trial import lm_trial_distributed

CONFIG = {**TINY_32, "budget.compute": 10240, "batch_size": 8, "eval_every": 10, "checkpoint_every": 2,
          "schedule.name": "cosine"}  # fmt: skip


class _SlowResults(tune.Callback):
    """Takes longer over each result than the run takes to end, so that the run's last report waits queued."""

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        time.sleep(3)


def test_a_two_worker_trial_ends_with_every_report_when_tune_takes_them_slowly(
    local_ray: None, lee32: SweepData, tmp_path: Path
) -> None:
    alone: list[dict[str, Any]] = []
    train_lm(TrialConfig.from_flat(CONFIG), lee32, alone.append)
    trainable = tune.with_resources(
        tune.with_parameters(
            lm_trial_distributed, data=[ray.put(lee32)], workers=2, cpus=1, gpus=0, storage=str(tmp_path / "train")
        ),
        {"memory": 256 * 2**20},  # as a sweep's driver asks: the trainer reserves the workers' CPUs
    )
    tuner = tune.Tuner(
        trainable,
        param_space=CONFIG,
        run_config=tune.RunConfig(name="slow", storage_path=str(tmp_path), callbacks=[_SlowResults()], verbose=0),
    )
    grids: list[tune.ResultGrid] = []
    fitting = threading.Thread(target=lambda: grids.append(tuner.fit()), daemon=True)
    fitting.start()
    fitting.join(timeout=900)  # the trial takes under a minute; a hang never ends
    assert not fitting.is_alive(), "the trial did not end after its last report"
    result = grids[0][0]
    assert result.error is None
    reports = result.metrics_dataframe
    assert reports["step"].tolist() == [report["step"] for report in alone]
    assert reports["workers"].iloc[0] == 2  # the first report says how many trained
    # Every second report carried rank 0's checkpoint, stored by Ray Train.
    paths = reports[CHECKPOINT_PATH_KEY].dropna().tolist()
    assert len(paths) == len(alone) // 2 and all(Path(path).is_dir() for path in paths[-1:])
