"""AutoLRS: the forecast, the rate search, and stages that explore from one saved state and pay for it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.conftest import TINY_32
from trainables.config import TrialConfig
from trainables.data.prepare import SweepData
from trainables.loop import train_lm
from trainables.model import GPT, ModelConfig
from trainables.step_rules import TrainingBatch, build_step_rule
from trainables.step_rules.autolrs import AutoLRSRule, RateSearch, exponential_forecast


def test_the_forecast_reads_a_decaying_exponential_off_further_on() -> None:
    x = np.arange(12.0)
    losses = 3.0 * np.exp(-0.3 * x) + 2.0
    assert exponential_forecast(losses, horizon=5) == pytest.approx(3.0 * math.exp(-1.5) + 2.0, rel=1e-4)
    assert exponential_forecast(np.array([1.0, math.nan, 0.5]), horizon=10) == math.inf
    with pytest.raises(ValueError, match="at least 3 losses, got 2"):
        exponential_forecast(np.array([1.0, 0.9]), horizon=10)


@pytest.mark.parametrize("seed", range(5))
def test_the_rate_search_finds_the_best_rate_of_a_known_quadratic(seed: int) -> None:
    best = 10**-2.2
    search = RateSearch(1e-4, 1e-1, kappa=2.0, rng=np.random.default_rng(seed))
    for _ in range(10):
        lr = search.ask()
        search.tell(lr, (math.log10(lr) - math.log10(best)) ** 2 + 1.0)
    assert abs(math.log10(search.best) - math.log10(best)) < 0.1  # within a quarter of the rate
    assert len(set(search.tried)) == 10  # no rate tried twice


def _rule(**settings: float) -> tuple[AutoLRSRule, GPT]:
    torch.manual_seed(0)
    model = GPT(ModelConfig(seq_len=8, n_layer=1, n_head=2, d_model=16))
    cfg = TrialConfig.from_flat({"model.seq_len": 8, "model.n_layer": 1, "model.n_head": 2, "model.d_model": 16,
                                 "budget.compute": 1e6, "optimizer.name": "autolrs", **settings})  # fmt: skip
    rule = build_step_rule(model, cfg, steps=1000, batches_per_epoch=10)
    assert isinstance(rule, AutoLRSRule)
    return rule, model


def _batch(model: GPT, step: int) -> TrainingBatch:
    rows = torch.randint(0, 257, (4, 9), generator=torch.Generator().manual_seed(step))
    return TrainingBatch(lambda window: model.loss(window[:, :-1], window[:, 1:]), rows)


def _params(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_each_exploration_starts_from_the_saved_state_and_evaluation_sees_it() -> None:
    rule, model = _rule(**{"optimizer.autolrs_tau_min": 30, "optimizer.autolrs_candidates": 3})
    saved = _params(model)
    rates, step = [], 0
    for candidate in range(3):
        for _ in range(rule.exploration_steps):  # 3 steps each
            if candidate == 1 and _ == 1:  # mid-exploration: an evaluation sees the run's own weights
                exploring = _params(model)
                rule.eval()
                assert all(torch.equal(a, b) for a, b in zip(_params(model), saved, strict=True))
                rule.train()
                assert all(torch.equal(a, b) for a, b in zip(_params(model), exploring, strict=True))
            _, rate, cost = rule.step(_batch(model, step), lr=0.0)
            rates.append(rate)
            step += 1
            assert cost == 1.0  # every exploration step is a training step, charged as one
        # Back where the stage started, bit for bit, before the next rate is tried.
        assert all(torch.equal(a, b) for a, b in zip(_params(model), saved, strict=True))
    assert len(set(rates)) == 3 and all(len(set(rates[i : i + 3])) == 1 for i in (0, 3, 6))
    assert not rule.exploring
    _, chosen, _ = rule.step(_batch(model, step), lr=0.0)
    assert chosen in rates  # the stage trains at the best-forecast rate it explored
    assert not all(torch.equal(a, b) for a, b in zip(_params(model), saved, strict=True))
    for _ in range(29):
        rule.step(_batch(model, step), lr=0.0)
    assert rule.exploring and rule.tau == 60  # the stage is over; the next is twice as long


def test_autolrs_trains_real_text_and_every_step_is_charged(lee32: SweepData) -> None:
    settings = {**TINY_32, "budget.compute": 120_000, "batch_size": 8, "eval_every": 25, "optimizer.name": "autolrs",
                "optimizer.autolrs_tau_min": 30, "optimizer.autolrs_tau_max": 120}  # fmt: skip
    reports: list[dict] = []
    outcome = train_lm(TrialConfig.from_flat(settings), lee32, reports.append)
    assert outcome.status == "completed"
    assert reports[-1]["val_loss"] < math.log(257) - 1.5
    assert all(r["compute"] == r["step"] * 8 * 32 for r in reports)
    assert len({round(r["lr"], 12) for r in reports}) > 1
    assert all(1e-4 * (1 - 1e-9) <= r["lr"] <= 1e-2 * (1 + 1e-9) for r in reports)


def test_autolrs_settings_are_checked() -> None:
    with pytest.raises(ValueError, match=r"autolrs_min_lr 0\.01 must be below autolrs_max_lr 0\.001"):
        TrialConfig.from_flat(
            {"budget.compute": 1e6, "optimizer.autolrs_min_lr": 1e-2, "optimizer.autolrs_max_lr": 1e-3}
        )


def test_a_stage_never_outlasts_the_phase() -> None:
    rule, model = _rule(**{"optimizer.autolrs_tau_min": 30, "optimizer.autolrs_candidates": 3})
    rule.steps_left = 50  # as a phase of 50 planned steps would build it
    rates = [rule.step(_batch(model, step), lr=0.0)[1] for step in range(50)]
    # The first stage is cut to half the phase, 25 steps: explorations of 2 steps, too short to forecast, so the
    # whole phase trains at the bounds' geometric mean.
    assert rule.stage == 0 and rates == [pytest.approx(math.sqrt(1e-4 * 1e-2))] * 50

    rule, model = _rule(**{"optimizer.autolrs_tau_min": 30, "optimizer.autolrs_candidates": 3})
    rule.steps_left = 75
    rates = [rule.step(_batch(model, step), lr=0.0)[1] for step in range(75)]
    # One stage of 30 (three 3-step explorations, then 30 steps at the chosen rate); of the 36 steps left, half is
    # too short for 3-step explorations, so they all train at the chosen rate.
    assert rule.stage == 1 and len(set(rates[:9])) == 3 and set(rates[39:]) == {rates[9]}
