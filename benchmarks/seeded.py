"""What the study benchmarks share: trainings run two at a time on prepared data, summarised across seeds.

A study trains the same configurations under several seeds (the model's
initialisation and the batch order; a study may also give each seed its own
data, such as its own random selection order) and reports each
configuration's mean, spread and every run. The prepared data is a module
global that forked workers inherit, so it is prepared once.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import torch

from trainables.config import TrialConfig
from trainables.data.prepare import SweepData
from trainables.loop import train_lm
from trainables.model import MODEL_PRESETS

_shared: dict[int, SweepData] | SweepData | None = None  # inherited by the forked workers


def share(data: SweepData | dict[int, SweepData]) -> None:
    """Make ``data`` what every training of this process and its workers reads: one for all, or one per seed."""
    global _shared
    _shared = data


def model_settings(model: str, data: SweepData) -> dict[str, Any]:
    """Trial settings of a preset model for ``data``'s tokenizer."""
    return {f"model.{k}": v for k, v in MODEL_PRESETS[model].items()} | {"model.vocab_size": data.vocab_size}


def train(settings: Mapping[str, Any]) -> dict[str, Any]:
    """One training on the shared data with one thread; its last report, first report and seconds."""
    assert _shared is not None, "share() the data first"
    torch.set_num_threads(1)
    cfg = TrialConfig.from_flat(dict(settings))
    data = _shared[cfg.seed] if isinstance(_shared, dict) else _shared
    reports: list[dict[str, Any]] = []
    started = time.perf_counter()
    train_lm(cfg, data, reports.append)
    return {"first": reports[0], "last": reports[-1], "seconds": time.perf_counter() - started}


def run_all(runs: Iterable[Mapping[str, Any]], summary: Callable[[dict[str, Any]], dict[str, Any]]) -> list[dict]:
    """Every run's settings trained two at a time (one per core), each summarised by ``summary``."""
    with ProcessPoolExecutor(max_workers=2) as pool:  # fork: the workers share the prepared data
        return [summary(done) for done in pool.map(train, list(runs))]


def spread(values: Iterable[float]) -> dict[str, float]:
    """Mean, sample standard deviation, least and greatest of a configuration's values across seeds."""
    values = list(values)
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }
