"""Run a sweep: spec -> data (once) -> Tuner -> MLflow and Parquet.

A sweep is identified by its output directory and its spec hash. Running the
same spec into the same directory again restores Tune's experiment there
(finished trials stay finished, unfinished ones continue) and logs into the
same MLflow parent and child runs, so nothing is duplicated. A different spec
in a directory that already holds a sweep is refused. What a searcher,
scheduler or other feature adds comes through its hooks
(``orchestrator.sweep_hooks``). See ``docs/architecture.md``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from mlflow.tracking import MlflowClient
from ray import tune

from orchestrator.layout import SweepDirError, SweepLayout, SweepRecord
from orchestrator.mlflow_runs import child_runs, ensure_experiment, finish_parent_run, open_parent_run, tracking_client
from orchestrator.progress import ConsoleProgress
from orchestrator.resources import check_cluster, default_concurrency
from orchestrator.results import CONFIG_PREFIX, SweepResults, collect_results
from orchestrator.schedulers import build_scheduler
from orchestrator.searchers import METRIC, MODE, build_searcher
from orchestrator.selection.pictures import SelectionPictures
from orchestrator.snapshots import SchedulerSnapshot, has_tune_snapshot, restore_kept_snapshot, snapshot_each_change
from orchestrator.spec import SweepSpec
from orchestrator.storage import TrialStorage, check_shared
from orchestrator.sweep_artifacts import log_sweep_artifacts
from orchestrator.sweep_hooks import SweepHooks, active_hooks
from orchestrator.tracking import MlflowTrialCallback
from orchestrator.user_cache import cache_dir
from trainables.data.prepare import SweepData, prepare_sweep_data
from trainables.loop import OBJECTIVE
from trainables.registry import PLUGINS_ENV
from trainables.selection.order_task import uniform_order_on_ray
from trainables.selection.orderings import Progress, uniform_document_order
from trainables.trial import lm_trial, lm_trial_distributed


@dataclass(frozen=True)
class SweepOutcome:
    layout: SweepLayout
    record: SweepRecord
    results: SweepResults
    interrupted: bool


TRIAL_RETRIES = 2
DRIVER_MEMORY = 256 * 2**20
# The token files of the sweeps in a trial storage, beside their experiments: no sweep's name starts with "_".
DATA_FOLDER = "_data"


def tracking_uri(spec: SweepSpec, layout: SweepLayout, override: str | None = None) -> str:
    """The flag, else ``MLFLOW_TRACKING_URI``, else the spec, else SQLite inside the sweep directory."""
    return override or os.environ.get("MLFLOW_TRACKING_URI") or spec.tracking.uri or layout.default_tracking_uri


def prepare_data(spec: SweepSpec, progress: Progress | None = None) -> SweepData:
    """The sweep's tokenised, split and ordered corpus: done once, on the driver, cached by content hash.

    A uniform order is computed by a Ray task (on a GPU where the cluster has one) when this process is on
    Ray, else here.
    """
    return prepare_sweep_data(
        spec.data.corpus,
        corpus_format=spec.data.corpus_format(),
        tokenizer=spec.data.tokenizer,
        val_fraction=spec.data.val_fraction,
        seed=spec.data.seed,
        seq_len=spec.model.seq_len,
        eval_tokens=spec.data.eval_tokens,
        cache_dir=cache_dir(),
        selection=spec.selection_plan(),
        progress=progress,
        uniform=uniform_order_on_ray if ray.is_initialized() else uniform_document_order,
    )


def shared_with_trials(data: SweepData, storage: TrialStorage) -> SweepData:
    """The sweep's data as its trials read it: the token file in the trials' storage, which every node sees
    (``check_shared``), or, where that storage is a bucket, the tokens themselves in Ray's object store."""
    if storage.is_local:
        return data.placed_in(Path(storage.joined(DATA_FOLDER)))
    return data.shipped()


def run_sweep(
    spec: SweepSpec,
    *,
    address: str | None = None,
    tracking_override: str | None = None,
    progress: Progress | None = None,
    log_to_driver: bool = True,
    ray_dashboard: bool = False,
) -> SweepOutcome:
    """Run (or continue) a sweep to the end and export its results.

    ``log_to_driver=False`` keeps the trials' own output (Ray prints it straight to this process's
    stdout) out of the console; Ray's session logs keep it either way. ``ray_dashboard`` starts Ray's
    dashboard with a private local Ray (see ``connect_ray``).

    ``progress`` follows the one long step of preparation, ordering a corpus for uniform selection.
    """
    layout = SweepLayout(spec.output_dir.resolve())
    previous = SweepRecord.find(layout)
    if previous is not None and previous.spec_hash != spec.spec_hash():
        raise SweepDirError(
            f"{layout.root} already holds sweep '{previous.name}' run from a different spec; "
            "choose another output directory (--output) or remove that one"
        )
    storage = TrialStorage.resolve(spec.storage, layout.tune_dir)
    # Reading the corpus can fail on bad input: do it before anything is written, and before Ray starts
    # unless a uniform order is to be computed, which runs on the cluster.
    if "uniform" in spec.selection_plan().strategies:
        connect_ray(address, log_to_driver=log_to_driver, dashboard=ray_dashboard)
    data = prepare_data(spec, progress)
    # Ray next: a cluster that cannot be reached, that lacks what a trial asks for, or a storage it cannot
    # share leaves no MLflow run open.
    connect_ray(address, log_to_driver=log_to_driver, dashboard=ray_dashboard)
    check_cluster(spec, ray.cluster_resources(), can_grow=not _ray_started_here())
    check_shared(storage)
    data = shared_with_trials(data, storage)
    layout.root.mkdir(parents=True, exist_ok=True)
    layout.spec_file.write_text(spec.source)
    SelectionPictures.save(layout.selection_dir, data)

    uri = tracking_uri(spec, layout, tracking_override)
    client = tracking_client(uri)
    experiment_id = ensure_experiment(
        client,
        spec.tracking.experiment or spec.name,
        layout.artifacts_dir.as_uri() if uri == layout.default_tracking_uri else None,
    )
    parent_run_id = open_parent_run(
        client,
        experiment_id,
        sweep_name=spec.name,
        params={**spec.summary(), "corpus_hash": data.corpus_hash, "train_tokens": data.train_tokens},
        tags={"effsweep.spec_hash": spec.spec_hash(), "effsweep.output_dir": str(layout.root)},
        previous_run_id=previous.parent_run_id if previous and previous.tracking_uri == uri else None,
    )
    record = SweepRecord(
        spec.name, spec.spec_hash(), uri, experiment_id, parent_run_id, [k.name for k in spec.knobs], spec.storage
    )
    record.save(layout)
    client.log_artifact(parent_run_id, str(layout.spec_file))

    hooks = active_hooks(spec)
    started = time.monotonic()
    try:
        with snapshot_each_change():
            grid = _tuner(spec, layout, storage, data, hooks).fit()
    except BaseException:
        client.set_terminated(parent_run_id, status="KILLED")
        raise
    if len(grid) == 0:  # a spec asks for one trial at least: Tune restored none and started nothing
        client.set_terminated(parent_run_id, status="FAILED")
        raise SweepDirError(
            f"{layout.tune_dir}: Tune ran no trial (a snapshot it could not restore? see {layout.log_file}); "
            "the sweep's files are left as they are"
        )
    results = collect_results(grid)
    interrupted = grid.num_terminated + grid.num_errors < len(grid)
    artifacts = log_sweep_artifacts(results, spec, record, layout, client, hooks)
    finish_parent_run(
        client,
        parent_run_id,
        metrics=_summary_metrics(results, time.monotonic() - started),
        tags=_best_tags(results, record, client),
        artifacts=artifacts,
        status="KILLED" if interrupted else "FINISHED",
    )
    return SweepOutcome(layout, record, results, interrupted)


# Ray Train's controller checks its workers every 2 s by default, and a trial waits for a check at
# each turn of its life (start, each report, the end): with a sweep's short trials that is most of
# their overhead (19 s at 2 s, 12 s at 0.25 s, 9.3 s at 0.1 s per 2-worker trial here; the checks
# are one cheap call per worker). Every process of the sweep gets this.
SWEEP_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1"}


def connect_ray(address: str | None, *, log_to_driver: bool = True, dashboard: bool = False) -> None:
    """Join the cluster at ``address``, else at ``RAY_ADDRESS``, else start a private local Ray.

    Token auth stays on, as Ray 2.60 sets it up. Left to itself, ``ray.init()`` joins the cluster last
    started on the machine (the one recorded in Ray's ``ray_current_cluster`` file), which may be
    anyone's: a sweep only joins a cluster it is told about (``--address``, or ``RAY_ADDRESS``, which
    Ray also sets for a Ray Job's driver). A private Ray starts without Ray's dashboard unless
    ``dashboard``: the sweep's console and MLflow show its progress, and the dashboard's processes take
    about 5 s of CPU from the first trials (docs/benchmarks.md, "Start-up of a sweep").
    """
    if not ray.is_initialized():
        target = address or os.environ.get("RAY_ADDRESS") or "local"
        plugins = os.environ.get(PLUGINS_ENV)  # modules whose registrations the trials need too
        env = SWEEP_ENV | ({PLUGINS_ENV: plugins} if plugins else {})
        # Ray refuses dashboard settings when it joins a cluster: that cluster has its own.
        local = {"include_dashboard": dashboard} if target == "local" else {}
        ray.init(
            address=target, runtime_env={"env_vars": env}, logging_level=logging.WARNING,
            log_to_driver=log_to_driver, **local,
        )  # fmt: skip


def _ray_started_here() -> bool:
    """Whether this process started the Ray it is on (``connect_ray``'s private one, or its own ``ray.init()``):
    such a Ray has this machine's resources, and no autoscaler adds nodes to it."""
    # Ray has no public call for this; a Ray without these attributes reads as a joined cluster (warn, not refuse).
    node = getattr(ray._private.worker, "_global_node", None)
    return bool(getattr(node, "head", False))


def _trainable(spec: SweepSpec, storage: TrialStorage, data: SweepData, hooks: Sequence[SweepHooks]) -> Any:
    """A plain Tune function for one-worker CPU trials (the hooks' own, if one has one); a driver of a Ray Train
    ``TorchTrainer`` otherwise."""
    resources = spec.resources
    own = next((f for f in (h.trial_function() for h in hooks) if f is not None), None)
    if own is not None:
        return tune.with_resources(tune.with_parameters(own, data=data), {"cpu": resources.cpus})
    if not resources.distributed:
        return tune.with_resources(tune.with_parameters(lm_trial, data=data), {"cpu": resources.cpus})
    driver = tune.with_parameters(
        lm_trial_distributed, data=[ray.put(data)], workers=resources.workers, cpus=resources.cpus,
        gpus=resources.gpus, storage=storage.joined("train"), filesystem=storage.filesystem,
    )  # fmt: skip
    # The trainer reserves its workers' CPUs and GPUs; the driver only waits for them, so it asks for
    # memory alone (Tune refuses an empty request, and a sliver of CPU would leave a 1-CPU node unable
    # to take a worker).
    return tune.with_resources(driver, {"memory": DRIVER_MEMORY})


def _tuner(
    spec: SweepSpec, layout: SweepLayout, storage: TrialStorage, data: SweepData, hooks: Sequence[SweepHooks]
) -> tune.Tuner:
    """A new Tuner, or the sweep's own restored where Tune has snapshotted it (with its searcher, scheduler
    and callbacks as they stood at the last snapshot: ``orchestrator.snapshots``)."""
    trainable = _trainable(spec, storage, data, hooks)
    experiment = storage.joined(spec.name)
    if storage.is_local:
        restore_kept_snapshot(Path(experiment))
    if has_tune_snapshot(experiment, storage.filesystem) and tune.Tuner.can_restore(
        experiment, storage_filesystem=storage.filesystem
    ):
        return tune.Tuner.restore(
            experiment, trainable, resume_unfinished=True, resume_errored=True,
            storage_filesystem=storage.filesystem,
        )  # fmt: skip
    scheduler = build_scheduler(spec, layout.root)
    return tune.Tuner(
        trainable,
        param_space=spec.fixed_config(),
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode=MODE,
            search_alg=build_searcher(spec),
            scheduler=scheduler,
            num_samples=spec.trials,
            max_concurrent_trials=default_concurrency(spec, ray.cluster_resources()),
            # Every trial of a sweep asks for the same resources, so a finished trial's worker
            # (torch imported, data mapped) can take the next one instead of a fresh process.
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=spec.name,
            storage_path=storage.path,
            storage_filesystem=storage.filesystem,
            callbacks=[
                MlflowTrialCallback(layout.root, hooks),
                ConsoleProgress([k.name for k in spec.knobs]),
                SchedulerSnapshot(scheduler),
            ],
            # A trial whose node is lost (or whose worker dies) runs again rather than being lost.
            failure_config=tune.FailureConfig(max_failures=TRIAL_RETRIES),
            # A retry needs only the last checkpoint, but a resume may need the one before: the snapshot
            # that a killed driver left can predate the newest checkpoint of a trial.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            stop=_stopper([stopper for h in hooks for stopper in h.stoppers()]),
            verbose=0,  # ConsoleProgress reports instead, at the level the CLI sets
        ),
    )


def _stopper(stoppers: list[tune.Stopper]) -> tune.Stopper | None:
    """None, the one stopper, or one that stops a trial when any of several would."""
    if len(stoppers) <= 1:
        return stoppers[0] if stoppers else None
    return _AnyStopper(stoppers)


class _AnyStopper(tune.Stopper):
    """Stops a trial when any of ``stoppers`` would; unlike Tune's ``CombinedStopper`` it shows every result to
    every stopper (one may learn from a result another stops on)."""

    def __init__(self, stoppers: list[tune.Stopper]) -> None:
        self.stoppers = stoppers

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return any([stopper(trial_id, result) for stopper in self.stoppers])

    def stop_all(self) -> bool:
        return any([stopper.stop_all() for stopper in self.stoppers])


def _summary_metrics(results: SweepResults, wall_s: float) -> dict[str, float]:
    counts = results.counts()
    metrics = {f"n_{status}": float(n) for status, n in counts.items()}
    metrics.update(
        n_trials=float(len(results.trials)), total_compute=float(results.trials["compute"].sum()), wall_s=wall_s
    )
    best = results.best()
    if best is not None:
        metrics[f"best_{OBJECTIVE}"] = float(best[OBJECTIVE])
    return metrics


def _best_tags(results: SweepResults, record: SweepRecord, client: MlflowClient) -> dict[str, str]:
    best = results.best()
    if best is None:
        return {}
    runs = child_runs(client, record.experiment_id, record.parent_run_id)
    tags = {"best_trial_id": best["trial_id"], "best_run_id": runs.get(best["trial_id"], "")}
    for knob in record.knobs:
        value = best.get(f"{CONFIG_PREFIX}{knob}")
        if value is not None and value == value:
            tags[f"best.{knob}"] = str(value)
    return tags
