"""What each Ray Train worker of a multi-worker trial runs, and the run checkpoints every trial uses.

Kept apart from ``trainables.trial``: a Ray Train worker is a fresh process
for every trial, and importing the function it runs imports this module.
Here it loads the training loop alone, not Tune or the hypergradient tasks
and their compiled kernels, which are a quarter of a second more at each
trial's start.
"""

from __future__ import annotations

import functools
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch

from trainables.config import TrialConfig
from trainables.loop import train_lm
from trainables.workers import Workers

CHECKPOINT_FILE = "run.pt"


def train_worker(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker's share of a trial: ``loop_config`` has the trial's flat ``config``, its ``data``
    (a one-element list holding the sweep data's reference) and the ``cpus`` each worker holds."""
    quiet_checkpoints()
    context = ray.train.get_context()
    torch.set_num_threads(max(1, int(loop_config["cpus"])))
    data = ray.get(loop_config["data"][0])
    device = ray.train.torch.get_device()
    # Ray Train's wrapping: DistributedDataParallel on this worker's device (its GPU, if it has one).
    wrap = functools.partial(ray.train.torch.prepare_model, move_to_device=device, parallel_strategy="ddp")
    workers = Workers(context.get_world_rank(), context.get_world_size(), wrap=wrap)

    def save(metrics: dict[str, Any], state: dict[str, Any]) -> None:
        # Every worker reports; rank 0's state stands for all (they hold the same weights and data order).
        if workers.rank != 0:
            ray.train.report(metrics)
            return
        report_run(ray.train.report, ray.train.Checkpoint, metrics, state)

    # A retried trial's trainer has the same run name, so Ray Train hands it the last checkpoint.
    resume = load_run(ray.train.get_checkpoint(), map_location=device)
    cfg = TrialConfig.from_flat(loop_config["config"])
    train_lm(cfg, data, report=ray.train.report, device=device, workers=workers, save=save, resume=resume)


def report_run(
    report: Callable[..., None], checkpoint: type[ray.train.Checkpoint], metrics: dict[str, Any], state: dict[str, Any]
) -> None:
    """``report(metrics)`` with the run ``state`` as its checkpoint; ``checkpoint`` is the class ``report``
    takes (Tune's for a Tune function, Ray Train's in a Train worker)."""
    with tempfile.TemporaryDirectory() as folder:
        torch.save(state, Path(folder) / CHECKPOINT_FILE)
        report(metrics, checkpoint=checkpoint.from_directory(folder))


def quiet_checkpoints() -> None:
    """Silence Ray's log line for every checkpoint it persists, which floods the sweep's console (MLflow and
    Tune's experiment state already say where checkpoints are)."""
    for name in ("ray.train._internal.storage", "ray.train.v2._internal.execution.storage"):
        logging.getLogger(name).setLevel(logging.WARNING)


def load_run(
    checkpoint: ray.train.Checkpoint | None, map_location: str | torch.device = "cpu"
) -> dict[str, Any] | None:
    """The run state a trial's checkpoint holds, for ``train_lm``'s ``resume``; None without one.

    Its tensors are loaded onto ``map_location``, the device that resumes the run, whichever device saved
    them (rank 0's GPU, for a trial with several workers).
    """
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return torch.load(Path(folder) / CHECKPOINT_FILE, map_location=map_location, weights_only=False)
