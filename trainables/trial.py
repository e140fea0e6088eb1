"""The Tune trainables of an LM sweep: one trial, on one worker or under Ray Train on several.

A searcher that runs trials of its own supplies their function through its sweep hooks instead
(``SweepHooks.trial_function``). See ``docs/architecture.md``.
"""

from __future__ import annotations

import functools
from typing import Any

import pyarrow.fs
import ray
import ray.train
import torch
from ray import tune
from ray.train.torch import TorchTrainer
from ray.util.queue import Queue

from trainables.config import TrialConfig
from trainables.data.prepare import SweepData
from trainables.loop import train_lm
from trainables.report_relay import ReportsToQueue, fit_and_relay
from trainables.train_worker import load_run, quiet_checkpoints, report_run, train_worker


def lm_trial(config: dict[str, Any], data: SweepData) -> None:
    """Train one configuration and report to Tune; ``data`` arrives through the object store.

    The tokens are not in it: it names the sweep's token file, which the trial
    maps (``trainables.data.prepare``), unless the sweep had to ship them.

    Every ``checkpoint_every``-th report carries a checkpoint of the whole run;
    a trial Tune retries (its node lost, its worker dead) or a resumed sweep
    restarts goes on from its last checkpoint.
    """
    quiet_checkpoints()
    use_reserved_cpus()
    train_lm(
        TrialConfig.from_flat(config),
        data,
        report=tune.report,
        save=functools.partial(report_run, tune.report, tune.Checkpoint),
        resume=load_run(tune.get_checkpoint()),
    )


def use_reserved_cpus() -> None:
    """One intra-op thread per CPU the trial reserved, so concurrent trials do not oversubscribe the node."""
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    torch.set_num_threads(max(1, int(cpus)))


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
    trainer's reports reach Tune through ``trainables.report_relay``, rank 0's
    (every worker reports the same numbers).
    """
    trial_id = tune.get_context().get_trial_id()
    # One slot: the run waits for Tune to take each report, as with Ray's own callback.
    reports = Queue(maxsize=1, actor_options={"num_cpus": 0})
    trainer = TorchTrainer(
        train_worker,
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
            callbacks=[ReportsToQueue(reports)],
        ),
    )
    fit_and_relay(trainer.fit, reports, tune.report)
