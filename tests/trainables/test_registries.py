"""Schedule families and step rules come from registries: a new one is a class and a registration.

This module is itself such a plugin: importing it registers ``test_linear`` (a schedule family) and
``test_adagrad`` (a step rule), so a sweep whose processes name it in ``EFFSWEEP_PLUGINS`` runs them.
It imports nothing from ``tests.conftest`` at the top: the sweep's processes import it too.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import Field, ValidationError
from torch import nn

from trainables.config import TrialConfig, trial_fields
from trainables.registry import PLUGINS_ENV, Registry
from trainables.schedules import SCHEDULES, parse_schedule, register_schedule, schedule_class
from trainables.schedules.base import WarmupSchedule, with_warmup
from trainables.step_rules import STEP_RULES, StepRule, register_step_rule, step_rule_class
from trainables.step_rules.base import decay_groups

REPO = Path(__file__).resolve().parents[2]


class LinearSchedule(WarmupSchedule):
    """Warmup, then a straight line from the peak to ``end_frac`` of it on the last step."""

    name: Literal["test_linear"] = "test_linear"
    end_frac: float = Field(0.0, ge=0, le=1, description="test_linear: final rate / peak")

    def multipliers(self, total_steps: int, *, peak: float, batch_size: int, tokens_per_step: int) -> np.ndarray:
        step, n_warmup = np.arange(total_steps), self.warmup_steps(total_steps)
        progress = np.clip((step - n_warmup) / max(total_steps - n_warmup - 1, 1), 0.0, 1.0)
        return with_warmup(step, n_warmup, 1.0 - (1.0 - self.end_frac) * progress, 1.0)


class AdagradRule(StepRule):
    """Adagrad at the planned rate."""

    law_modelled = True

    @classmethod
    def build(cls, model: nn.Module, cfg: TrialConfig, *, steps: int, batches_per_epoch: int) -> AdagradRule:
        return cls(torch.optim.Adagrad(decay_groups(model, cfg.weight_decay), lr=cfg.scaled_peak_lr), model, 0.0)


# One by class, one by import path (imported on first use), as a plugin would.
register_schedule("test_linear", LinearSchedule)
register_step_rule("test_adagrad", "tests.trainables.test_registries:AdagradRule")


def test_registered_implementations_are_found_by_name_and_checked() -> None:
    assert schedule_class("test_linear") is LinearSchedule
    assert step_rule_class("test_adagrad").__name__ == "AdagradRule"
    assert list(SCHEDULES)[:2] == ["constant", "cosine"] and "test_linear" in SCHEDULES
    fields = trial_fields()
    assert fields["schedule.end_frac"].kind == "float"
    assert "test_linear" in fields["schedule.name"].choices and "test_adagrad" in fields["optimizer.name"].choices
    with pytest.raises(TypeError, match="must be a subclass of Schedule"):
        register_schedule("test_bad", dict)  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match=r"an import path must read 'module:Class', got 'tests.trainables.test_registries'"
    ):
        register_step_rule("test_bad", "tests.trainables.test_registries")
    with pytest.raises(ValueError, match=r"a schedule name must be an identifier .*got 'a.b'"):
        register_schedule("a.b", LinearSchedule)
    numbers = Registry("number", int, {"text": "builtins:str"})
    with pytest.raises(TypeError, match="number text: builtins:str is not a subclass of int"):
        numbers.load("text")


def test_unknown_names_list_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown schedule 'cosin'; known: constant, cosine, wsd, .*test_linear"):
        schedule_class("cosin")
    with pytest.raises(ValueError, match=r"unknown step rule 'adam'; known: adamw, sgd, .*test_adagrad"):
        step_rule_class("adam")
    with pytest.raises(ValidationError) as caught:
        TrialConfig.from_flat({"budget.compute": 1e6, "schedule.name": "cosin", "optimizer.name": "adam"})
    errors = {".".join(map(str, e["loc"])): e["msg"] for e in caught.value.errors()}
    assert errors["schedule.name"].startswith("Value error, unknown schedule 'cosin'; known: constant, cosine")
    assert errors["optimizer.name"].startswith("Value error, unknown step rule 'adam'; known: adamw, sgd")


def test_a_setting_the_family_does_not_read_is_named() -> None:
    with pytest.raises(ValidationError) as caught:
        TrialConfig.from_flat({"budget.compute": 1e6, "schedule.name": "cosine", "schedule.step_frac": 0.5})
    (error,) = caught.value.errors()
    assert error["loc"] == ("schedule", "step_frac") and error["msg"] == "Value error, not a setting of cosine"
    with pytest.raises(ValidationError, match=re.escape("warmup_frac\n  Value error, not a setting of one_cycle")):
        parse_schedule({"name": "one_cycle", "warmup_frac": 0.1})
    with pytest.raises(ValidationError, match=re.escape("end_frac\n  Value error, not a setting of constant")):
        parse_schedule({"end_frac": 0.5})  # no name: constant


def test_each_family_has_its_own_settings_and_the_flat_keys_stay() -> None:
    cfg = TrialConfig.from_flat({"budget.compute": 1e6, "schedule.name": "wsd", "schedule.decay_shape": "exp"})
    flat = cfg.to_flat()
    assert {k for k in flat if k.startswith("schedule.")} == {
        "schedule.name", "schedule.warmup_frac", "schedule.decay_frac", "schedule.min_lr_frac",
        "schedule.decay_shape", "schedule.half_life_frac",
    }  # fmt: skip
    assert TrialConfig.from_flat(flat) == cfg
    assert TrialConfig.from_flat({"budget.compute": 1e6}).schedule == parse_schedule({"name": "constant"})
    for name in SCHEDULES:
        family = schedule_class(name)
        assert family.model_fields["name"].default == name
        assert set(family.model_fields) <= {k.removeprefix("schedule.").split(".")[0] for k in trial_fields()}


def test_a_registered_family_and_rule_plan_and_train() -> None:
    cfg = TrialConfig.from_flat(
        {"budget.compute": 128 * 16 * 50, "schedule.name": "test_linear", "optimizer.name": "test_adagrad"}
    )
    lrs = cfg.planned_lrs()
    assert lrs[1] == pytest.approx(cfg.peak_lr) and lrs[-1] == 0.0 and np.all(np.diff(lrs[2:]) < 0)
    with pytest.raises(ValidationError, match=r"sets or shapes its own rate; schedule\.name must be constant"):
        TrialConfig.from_flat({"budget.compute": 1e6, "schedule.name": "test_linear", "optimizer.name": "vsgd"})


def test_step_rule_traits() -> None:
    traits = {
        name: (rule.chooses_own_rate, rule.law_modelled, rule.extra_compute_per_step, rule.single_worker_only)
        for name in STEP_RULES
        for rule in [step_rule_class(name)]
    }
    assert traits == {
        "adamw": (False, True, 0.0, False),
        "sgd": (False, True, 0.0, False),
        "schedule_free_adamw": (False, False, 0.0, False),
        "schedule_free_sgd": (False, False, 0.0, False),
        "armijo_sgd": (True, False, 1 / 3, True),
        "vsgd": (True, False, 1.0, True),
        "dbd": (False, False, 0.0, False),
        "dbd_retract": (False, False, 0.0, False),
        "autolrs": (True, False, 0.0, True),
        "test_adagrad": (False, True, 0.0, False),
    }


@pytest.mark.slow
def test_a_sweep_runs_a_family_and_a_rule_registered_by_a_plugin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import effsweep, tiny_spec, write_spec

    # The CLI, and the Ray workers it starts, import this module and so see its registrations.
    monkeypatch.setenv(PLUGINS_ENV, "tests.trainables.test_registries")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    train = {"eval_every": 20, "batch_size": 8, "optimizer.name": "test_adagrad", "schedule.name": "test_linear"}
    spec = tiny_spec(name="plugins", train=train, search={"peak_lr": {"choice": [3e-3]}}, searcher="grid", trials=None)
    root = tmp_path / "sweep"
    process = effsweep("run", str(write_spec(tmp_path / "spec.yaml", spec)), "--output", str(root), "--quiet")
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-5000:]

    (trial,) = pd.read_parquet(root / "results" / "trials.parquet").to_dict("records")
    assert trial["status"] == "completed" and trial["config.optimizer.name"] == "test_adagrad"
    config = {k.removeprefix("config."): v for k, v in trial.items() if k.startswith("config.") and v == v}
    planned = TrialConfig.from_flat(config).planned_lrs()
    reports = pd.read_parquet(root / "results" / "metrics.parquet").sort_values("step")
    assert reports["lr"].tolist() == pytest.approx([planned[step - 1] for step in reports["step"]])
    assert reports["lr"].iloc[-1] == 0.0  # the family's straight line to zero, not the default constant
