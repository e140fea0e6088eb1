"""What a ``hypergrad`` sweep shows once it ends: each chain's meta-iterations, on the parent run and in a picture.

Called through ``orchestrator.hypergrad.hooks``. See ``docs/hypergrad.md``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from orchestrator.hypergrad.searcher import CHAINS_FILE
from orchestrator.mlflow_runs import MetricBatcher, set_tags
from orchestrator.plots import plot_learned_schedules
from orchestrator.results import CONFIG_PREFIX, SweepResults
from trainables.hypergrad.hyperparameters import Hyperparameters
from trainables.hypergrad.reversal import CONFIG_PREFIX as HYPER_PREFIX
from trainables.hypergrad.reversal import GRAD_NORM
from trainables.hypergrad.tasks import lm_group_names
from trainables.model import ModelConfig

CHAIN, META_STEP = f"{CONFIG_PREFIX}{HYPER_PREFIX}chain", f"{CONFIG_PREFIX}{HYPER_PREFIX}meta_step"


def chain_history(results: SweepResults) -> pd.DataFrame:
    """One row per meta-iteration that reported: chain, meta_step, val_loss, meta_grad_norm, trial_id."""
    trials = results.trials
    if trials.empty or CHAIN not in trials or results.metrics.empty or GRAD_NORM not in results.metrics:
        return pd.DataFrame(columns=["chain", "meta_step", "val_loss", GRAD_NORM, "trial_id"])
    norms = results.metrics.groupby("trial_id")[GRAD_NORM].last()
    history = pd.DataFrame(
        {
            "chain": trials[CHAIN].astype(int),
            "meta_step": trials[META_STEP].astype(int),
            "val_loss": trials["val_loss"],
            GRAD_NORM: trials["trial_id"].map(norms),
            "trial_id": trials["trial_id"],
        }
    )
    return history.dropna(subset=[GRAD_NORM]).sort_values(["chain", "meta_step"], ignore_index=True)


def best_hyperparameters(results: SweepResults) -> Hyperparameters | None:
    """The hyperparameters of the meta-iteration with the lowest validation loss."""
    best = results.best()
    if best is None or f"{CONFIG_PREFIX}{HYPER_PREFIX}log_lr" not in best:
        return None
    return Hyperparameters.from_dict(
        {name: _nested_array(best[f"{CONFIG_PREFIX}{HYPER_PREFIX}{name}"]) for name in Hyperparameters.FIELDS}
    )


def _nested_array(value: object) -> np.ndarray:
    """A config's nested list as an array, whether fresh from Tune (lists) or read back from Parquet (arrays)."""
    return np.array([np.asarray(row, dtype=float) for row in value], dtype=float)


def report_chains(
    results: SweepResults, model: ModelConfig, client: MlflowClient, run_id: str, sweep_dir: Path
) -> list[Path]:
    """Log every chain's losses and meta-gradient norms by meta-step, and how it ended, on the parent run;
    draw the learned schedules. Points a continued sweep already logged are not logged again."""
    history = chain_history(results)
    keys = {f"chain{c}.{k}" for c in history["chain"].unique() for k in ("val_loss", GRAD_NORM)}
    logged = {key: {m.step for m in client.get_metric_history(run_id, key)} for key in keys}
    batcher, now = MetricBatcher(client), int(time.time() * 1000)
    for row in history.itertuples():
        for key in ("val_loss", GRAD_NORM):
            name = f"chain{row.chain}.{key}"
            if int(row.meta_step) not in logged[name]:
                batcher.add(run_id, {name: float(getattr(row, key))}, step=int(row.meta_step), timestamp_ms=now)
    batcher.flush()
    record = sweep_dir / CHAINS_FILE
    if record.is_file():
        ends = {f"chain{c['chain']}.ended": c["ended"] for c in json.loads(record.read_text()) if c["ended"]}
        set_tags(client, run_id, ends)
    best = best_hyperparameters(results)
    if best is None:
        return []
    directory = sweep_dir / "results"
    directory.mkdir(parents=True, exist_ok=True)
    return [plot_learned_schedules(best, lm_group_names(model), history, directory / "learned_schedules.png")]
