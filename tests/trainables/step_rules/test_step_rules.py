"""Step-size rules on real text: the line search's condition, schedule-free's averaged weights, loss falls."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import torch

from tests.conftest import TINY_32
from trainables import loop as loop_module
from trainables.config import TrialConfig
from trainables.data.prepare import SweepData
from trainables.loop import train_lm
from trainables.model import GPT, ModelConfig
from trainables.patch import PatchBatcher
from trainables.step_rules import TrainingBatch, build_step_rule


def _config(**settings: Any) -> TrialConfig:
    return TrialConfig.from_flat({**TINY_32, "budget.compute": 120_000, "batch_size": 8, "eval_every": 25, **settings})


def _model() -> GPT:
    torch.manual_seed(0)
    return GPT(ModelConfig(seq_len=32, n_layer=2, n_head=2, d_model=32))


def test_every_accepted_line_search_step_satisfies_armijo(lee32: SweepData) -> None:
    model = _model()
    cfg = _config(**{"optimizer.name": "armijo_sgd", "optimizer.line_search_start": 1.0})
    batcher = PatchBatcher(lee32.train.tokens, seq_len=32, patch_size=1, batch_size=8, seed=0)
    per_epoch = batcher.batches_per_epoch(False)
    rule = build_step_rule(model, cfg, steps=60, batches_per_epoch=per_epoch)
    found = []
    for _ in range(60):
        window = batcher.token_batch()
        rule.step(TrainingBatch(lambda rows: model.loss(rows[:, :-1], rows[:, 1:]), window), cfg.peak_lr)
        found.append(rule.optimizer.last)
    assert all(step.satisfies_armijo(0.1) for step in found)
    assert any(step.evaluations > 2 for step in found)  # it did have to backtrack
    growth = [b.step_size / a.step_size for a, b in itertools.pairwise(found)]
    assert max(growth) <= 2 ** (1 / per_epoch) * (1 + 1e-12)  # at most 2x over an epoch


def test_schedule_free_evaluates_at_the_averaged_weights(lee32: SweepData, monkeypatch: pytest.MonkeyPatch) -> None:
    modes: list[bool] = []
    real_evaluate = loop_module.evaluate
    rules = []
    real_build = loop_module.build_step_rule

    def remember(model: torch.nn.Module, cfg: TrialConfig, **kwargs: int) -> Any:
        rules.append(real_build(model, cfg, **kwargs))
        return rules[-1]

    def spying(model: GPT, windows: torch.Tensor, **options: Any) -> float:
        group = rules[-1].optimizer.param_groups[0]
        modes.append(group["train_mode"])
        beta = group["betas"][0]
        for p in model.parameters():  # eval mode holds x = (y - (1 - beta) z) / beta, not y
            z = rules[-1].optimizer.state[p]["z"]
            rules[-1].optimizer.train()
            y = p.detach().clone()
            rules[-1].optimizer.eval()
            torch.testing.assert_close(p.detach(), (y - (1 - beta) * z) / beta, rtol=1e-4, atol=1e-6)
        return real_evaluate(model, windows, **options)

    monkeypatch.setattr(loop_module, "build_step_rule", remember)
    monkeypatch.setattr(loop_module, "evaluate", spying)
    reports: list[dict[str, Any]] = []
    train_lm(_config(**{"optimizer.name": "schedule_free_adamw"}), lee32, reports.append)
    assert modes and not any(modes)  # every evaluation ran in eval mode, at x
    assert rules[-1].optimizer.param_groups[0]["train_mode"]  # and training went back to y


@pytest.mark.parametrize(
    "settings",
    [
        {"optimizer.name": "schedule_free_adamw"},
        {"optimizer.name": "schedule_free_sgd", "peak_lr": 0.5},
        {"optimizer.name": "armijo_sgd"},
        {"optimizer.name": "vsgd"},
        {"optimizer.name": "dbd", "peak_lr": 3e-3},
        {"optimizer.name": "dbd_retract", "peak_lr": 3e-3},
        {"optimizer.name": "dbd_retract", "peak_lr": 0.1, "optimizer.dbd_direction": "momentum"},
    ],
    ids=lambda s: "-".join(str(v) for v in s.values()),
)
def test_each_adaptive_rule_reduces_the_loss_and_reports_its_rate(lee32: SweepData, settings: dict) -> None:
    reports: list[dict[str, Any]] = []
    outcome = train_lm(_config(**settings), lee32, reports.append)
    assert outcome.status == "completed"
    assert reports[-1]["val_loss"] < math.log(257) - 1.5  # far below an untrained model's 5.55
    assert reports[-1]["val_loss"] < reports[0]["val_loss"] + 1e-6
    assert all(r["lr"] > 0 and math.isfinite(r["lr"]) for r in reports)
    assert reports[-1]["compute"] <= 120_000  # extra evaluations are paid for out of the same budget


def test_self_rated_rules_pay_for_their_extra_work(lee32: SweepData) -> None:
    plain: list[dict[str, Any]] = []
    train_lm(_config(**{"optimizer.name": "sgd", "peak_lr": 0.3}), lee32, plain.append)
    doubled: list[dict[str, Any]] = []
    train_lm(_config(**{"optimizer.name": "vsgd"}), lee32, doubled.append)
    assert plain[-1]["step"] == 2 * doubled[-1]["step"]  # two gradients a step: half the steps
    assert plain[-1]["compute"] == doubled[-1]["compute"]
    assert len({round(r["lr"], 12) for r in doubled}) > 1  # a rate that moves, reported as used
