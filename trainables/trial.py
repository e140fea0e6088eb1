"""The Tune trainables: one trial of a sweep, on one worker or under Ray Train on several."""

from __future__ import annotations

import logging
import math
import tempfile
from pathlib import Path
from typing import Any

import pyarrow.fs
import ray
import ray.train
import torch
from ray import tune
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from trainables.config import TrialConfig
from trainables.data import SweepData
from trainables.fixed_point import FixedPointOverflow
from trainables.hyperparameters import Hyperparameters
from trainables.hypertasks import lm_meta_iteration
from trainables.loop import DIVERGED, train_lm
from trainables.reversible import CONFIG_PREFIX
from trainables.workers import Workers

CHECKPOINT_FILE = "run.pt"


def lm_trial(config: dict[str, Any], data: SweepData) -> None:
    """Train one configuration and report to Tune; ``data`` arrives through the object store.

    Every ``checkpoint_every``-th report carries a checkpoint of the whole run;
    a trial Tune retries (its node lost, its worker dead) or a resumed sweep
    restarts goes on from its last checkpoint.
    """
    _quiet_checkpoints()
    _use_reserved_cpus()
    train_lm(
        TrialConfig.from_flat(config),
        data,
        report=tune.report,
        save=_report_with_checkpoint,
        resume=_resumed(tune.get_checkpoint()),
    )


def _use_reserved_cpus() -> None:
    # One intra-op thread per reserved CPU, so concurrent trials do not oversubscribe the node.
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    torch.set_num_threads(max(1, int(cpus)))


def _quiet_checkpoints() -> None:
    # Ray logs every checkpoint it persists at INFO, which floods the sweep's console; MLflow and
    # Tune's experiment state already say where checkpoints are.
    for name in ("ray.train._internal.storage", "ray.train.v2._internal.execution.storage"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _report_with_checkpoint(metrics: dict[str, Any], state: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        torch.save(state, Path(folder) / CHECKPOINT_FILE)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def _resumed(checkpoint: ray.train.Checkpoint | None) -> dict[str, Any] | None:
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return torch.load(Path(folder) / CHECKPOINT_FILE, weights_only=False)


def lm_trial_distributed(
    config: dict[str, Any],
    data: list[ray.ObjectRef],
    workers: int,
    cpus: float,
    gpus: float,
    storage: str,
    filesystem: pyarrow.fs.FileSystem | None = None,
) -> None:
    """A Tune driver for one trial trained by ``workers`` Ray Train workers (DDP: gloo on CPU, NCCL on GPU).

    The driver itself holds no resources; the trainer reserves its workers
    together. ``data`` is a one-element list so that the sweep's data stays a
    reference until each worker fetches it from the object store. The
    trainer's reports reach Tune through ``TuneReportCallback``, rank 0's
    (every worker reports the same numbers).
    """
    trial_id = tune.get_context().get_trial_id()
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={"config": config, "data": data, "cpus": cpus},
        scaling_config=ray.train.ScalingConfig(
            num_workers=workers,
            use_gpu=gpus > 0,
            resources_per_worker={"CPU": cpus, **({"GPU": gpus} if gpus > 0 else {})},
        ),
        run_config=ray.train.RunConfig(
            name=f"train-{trial_id}",
            storage_path=storage,
            storage_filesystem=filesystem,
            callbacks=[TuneReportCallback()],
        ),
    )
    trainer.fit()


def _train_worker(loop_config: dict[str, Any]) -> None:
    _quiet_checkpoints()
    context = ray.train.get_context()
    torch.set_num_threads(max(1, int(loop_config["cpus"])))
    data = ray.get(loop_config["data"][0])
    device = ray.train.torch.get_device()
    workers = Workers(context.get_world_rank(), context.get_world_size())

    def save(metrics: dict[str, Any], state: dict[str, Any]) -> None:
        # Every worker reports; rank 0's state stands for all (they hold the same weights and data order).
        if workers.rank != 0:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as folder:
            torch.save(state, Path(folder) / CHECKPOINT_FILE)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))

    # A retried trial's trainer has the same run name, so Ray Train hands it the last checkpoint.
    resume = _resumed(ray.train.get_checkpoint())
    cfg = TrialConfig.from_flat(loop_config["config"])
    train_lm(cfg, data, report=ray.train.report, device=device, workers=workers, save=save, resume=resume)


def hypergrad_trial(config: dict[str, Any], data: SweepData) -> None:
    """One meta-iteration of the ``hypergrad`` searcher: train the LM reversibly, reverse, report hypergradients."""
    _use_reserved_cpus()
    hyper = {k.removeprefix(CONFIG_PREFIX): v for k, v in config.items() if k.startswith(CONFIG_PREFIX)}
    cfg = TrialConfig.from_flat({k: v for k, v in config.items() if not k.startswith(CONFIG_PREFIX)})
    try:
        report = lm_meta_iteration(cfg, data, Hyperparameters.from_dict(hyper))
    except FixedPointOverflow:  # the weights left the fixed-point range: the rates are too high
        report = {DIVERGED: 1.0, "val_loss": math.nan, "step": 0.0, "compute": 0.0}
    tune.report(report)
