"""Run checkpoints through the files a trial writes and reads: saved by the loop, loaded onto a device."""

from __future__ import annotations

from typing import Any

import pytest
import ray.train
import torch

from tests.conftest import TINY_32
from trainables.config import TrialConfig
from trainables.data.prepare import SweepData
from trainables.loop import train_lm
from trainables.model import GPT
from trainables.train_worker import load_run, report_run


class _Interrupted(Exception):
    pass


def test_a_checkpoint_written_by_the_loop_loads_onto_a_device_and_resumes_the_run(lee32: SweepData) -> None:
    cfg = TrialConfig.from_flat({**TINY_32, "budget.compute": 10240, "batch_size": 8, "eval_every": 5,
                                 "checkpoint_every": 2, "patch.K": 2, "patch.lambda": 0.5,
                                 "schedule.name": "cosine"})  # fmt: skip
    whole: list[dict[str, Any]] = []
    train_lm(cfg, lee32, whole.append, save=lambda metrics, state: whole.append(metrics))

    before: list[dict[str, Any]] = []
    loaded: dict[str, dict[str, Any]] = {}

    def read_back(metrics: dict[str, Any], checkpoint: ray.train.Checkpoint) -> None:
        # The checkpoint's folder lasts as long as the report: read it as a retried trial would.
        before.append(metrics)
        loaded["cpu"] = load_run(checkpoint, map_location=torch.device("cpu"))
        loaded["meta"] = load_run(checkpoint, map_location="meta")

    def save_then_die(metrics: dict[str, Any], state: dict[str, Any]) -> None:
        report_run(read_back, ray.train.Checkpoint, metrics, state)
        raise _Interrupted

    with pytest.raises(_Interrupted):
        train_lm(cfg, lee32, before.append, save=save_then_die)
    state = loaded["cpu"]
    assert set(state) == {"model", "rule", "batcher", "torch_rng", "run"}  # no CUDA generator on a CPU run
    assert set(state["model"]) == set(GPT(cfg.model).state_dict())  # the bare model's keys, no wrapper's prefix
    assert all(tensor.is_meta for tensor in loaded["meta"]["model"].values())  # map_location reaches every tensor
    assert all(tensor.device.type == "cpu" for tensor in state["model"].values())

    after: list[dict[str, Any]] = []
    train_lm(cfg, lee32, after.append, save=lambda metrics, state: after.append(metrics), resume=state)
    assert before[-1]["phase"] == "patch" and after[0]["step"] > before[-1]["step"]  # went on within the patch phase
    resumed = before + after
    for key in ("step", "phase", "val_loss", "train_loss", "compute", "tokens", "lr_sum"):
        assert [report[key] for report in resumed] == [report[key] for report in whole], key  # bit-identical on CPU
