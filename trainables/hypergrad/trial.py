"""The Tune trainable of the ``hypergrad`` searcher: one meta-iteration of a chain. See ``docs/hypergrad.md``."""

from __future__ import annotations

import math
from typing import Any

from ray import tune

from trainables.config import TrialConfig
from trainables.data.prepare import SweepData
from trainables.hypergrad.fixed_point import FixedPointOverflow
from trainables.hypergrad.hyperparameters import Hyperparameters
from trainables.hypergrad.reversal import CONFIG_PREFIX
from trainables.hypergrad.tasks import lm_meta_iteration
from trainables.loop import DIVERGED
from trainables.trial import use_reserved_cpus


def hypergrad_trial(config: dict[str, Any], data: SweepData) -> None:
    """One meta-iteration of the ``hypergrad`` searcher: train the LM reversibly, reverse, report hypergradients."""
    use_reserved_cpus()
    hyper = {k.removeprefix(CONFIG_PREFIX): v for k, v in config.items() if k.startswith(CONFIG_PREFIX)}
    cfg = TrialConfig.from_flat({k: v for k, v in config.items() if not k.startswith(CONFIG_PREFIX)})
    try:
        report = lm_meta_iteration(cfg, data, Hyperparameters.from_dict(hyper))
    except FixedPointOverflow:  # the weights left the fixed-point range: the rates are too high
        report = {DIVERGED: 1.0, "val_loss": math.nan, "step": 0.0, "compute": 0.0}
    tune.report(report)
