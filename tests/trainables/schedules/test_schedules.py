"""Every schedule: warmup endpoints, peak, floor, monotone where promised, full length."""

from __future__ import annotations

import re

import numpy as np
import pytest
from pydantic import ValidationError

from trainables.config import TrialConfig
from trainables.schedules import parse_schedule
from trainables.schedules.power import power
from trainables.schedules.wsd import wsd

TOTAL = 200
FAMILIES = ("constant", "cosine", "wsd", "two_step", "power", "inverse_power", "one_cycle", "explore_converge")


def _lrs(**params: object) -> np.ndarray:
    return parse_schedule(params).multipliers(TOTAL, peak=3e-3, batch_size=16, tokens_per_step=2048)


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_plans_every_step_within_the_peak(name: str) -> None:
    lrs = _lrs(name=name)
    assert lrs.shape == (TOTAL,) and np.all(lrs > -1e-12) and np.all(lrs <= 1 + 1e-12)
    assert np.all(np.isfinite(lrs))


@pytest.mark.parametrize("name", ["constant", "cosine", "wsd", "two_step", "inverse_power", "explore_converge"])
def test_warmup_rises_linearly_to_the_peak_on_its_last_step(name: str) -> None:
    lrs = _lrs(name=name, warmup_frac=0.1)
    np.testing.assert_allclose(lrs[:20], np.arange(1, 21) / 20)
    assert lrs[19] == 1.0


def test_no_warmup_starts_at_the_peak() -> None:
    assert _lrs(name="cosine", warmup_frac=0.0)[0] == 1.0


def test_constant_holds_the_peak() -> None:
    np.testing.assert_array_equal(_lrs(name="constant", warmup_frac=0.1)[19:], 1.0)


def test_cosine_goes_from_peak_to_floor_monotonically() -> None:
    lrs = _lrs(name="cosine", warmup_frac=0.05, min_lr_frac=0.1)
    assert lrs[9] == lrs[10] == 1.0 and lrs[-1] == pytest.approx(0.1)
    assert np.all(np.diff(lrs[9:]) <= 1e-12)
    mid = 10 + (TOTAL - 10 - 1) / 2  # half-way through the decay, cos = 0
    assert np.interp(mid, np.arange(TOTAL), lrs) == pytest.approx(0.55, abs=1e-3)


@pytest.mark.parametrize("shape", ["linear", "cosine"])
def test_wsd_is_stable_then_decays_to_the_floor(shape: str) -> None:
    lrs = _lrs(name="wsd", warmup_frac=0.05, decay_frac=0.2, min_lr_frac=0.0, decay_shape=shape)
    np.testing.assert_array_equal(lrs[9:160], 1.0)
    decay = lrs[160:]
    assert len(decay) == 40 and np.all(np.diff(decay) < 0) and decay[-1] == 0.0
    if shape == "linear":
        np.testing.assert_allclose(decay, 1 - np.arange(1, 41) / 40)


def test_wsd_exponential_decay_halves_every_half_life() -> None:
    lrs = _lrs(name="wsd", warmup_frac=0.05, decay_frac=0.2, decay_shape="exp", half_life_frac=0.25)
    decay = lrs[160:]  # 40 steps, half-life 10
    np.testing.assert_allclose(decay, 0.5 ** (np.arange(1, 41) / 10))
    assert decay[9] == pytest.approx(0.5) and decay[-1] == pytest.approx(1 / 16)


def test_wsd_decay_shapes_differ_in_the_middle() -> None:
    linear = wsd(np.arange(100), 100, n_warmup=0, n_decay=50, floor=0.0, shape="linear", half_life=1)
    cosine = wsd(np.arange(100), 100, n_warmup=0, n_decay=50, floor=0.0, shape="cosine", half_life=1)
    assert cosine[60] > linear[60] and cosine[90] < linear[90]


def test_two_step_drops_once_to_its_factor() -> None:
    lrs = _lrs(name="two_step", warmup_frac=0.05, step_frac=0.6, step_factor=0.25)
    np.testing.assert_array_equal(lrs[9:120], 1.0)
    np.testing.assert_array_equal(lrs[120:], 0.25)


def test_power_scheduler_follows_b_a_n_to_the_c() -> None:
    step = np.arange(1000)
    tokens_per_step, batch, peak = 128, 1, 0.05
    lrs = power(
        step, 1000, n_warmup=0, n_decay=100, peak=peak, batch_size=batch, tokens_per_step=tokens_per_step, a=4, c=-0.51
    )
    n = (step + 1) * tokens_per_step
    expected = np.minimum(1.0, batch * 4 * n**-0.51 / peak)
    np.testing.assert_allclose(lrs[:900], expected[:900])
    assert lrs[0] == 1.0 and lrs[899] < lrs[100] < 1.0  # capped at the peak, then a power-law fall
    decay = lrs[900:]
    assert np.all(np.diff(decay) < 0) and decay[-1] == pytest.approx(0.0, abs=1e-12)  # exponential decay to zero
    assert decay[0] < lrs[899] * 1.0001


def test_power_warmup_ramps_to_the_power_value() -> None:
    lrs = power(
        np.arange(100), 100, n_warmup=10, n_decay=10, peak=0.05, batch_size=1, tokens_per_step=4096, a=4, c=-0.51
    )
    target = min(1.0, 4 * (10 * 4096) ** -0.51 / 0.05)
    np.testing.assert_allclose(lrs[:10], np.arange(1, 11) / 10 * target)


def test_inverse_power_decay_has_its_exponent() -> None:
    lrs = _lrs(name="inverse_power", warmup_frac=0.0, decay_exponent=0.5, decay_timescale_frac=0.05)
    t = np.arange(TOTAL)
    np.testing.assert_allclose(lrs, (1 + t / 10.0) ** -0.5)
    assert np.all(np.diff(lrs) < 0)


def test_explore_then_converge() -> None:
    lrs = _lrs(name="explore_converge", warmup_frac=0.0, explore_frac=0.5, decay_exponent=1.0)
    np.testing.assert_array_equal(lrs[:100], 1.0)
    assert np.all(np.diff(lrs[99:]) < 0)
    assert lrs[100] == pytest.approx(1 / (1 + 1 / 10))


def test_one_cycle_rate_and_momentum() -> None:
    cfg = parse_schedule({"name": "one_cycle", "cycle_rise_frac": 0.3, "cycle_div": 25, "cycle_final_div": 1e4})
    lrs = cfg.multipliers(TOTAL, peak=3e-3, batch_size=16, tokens_per_step=2048)
    momenta = cfg.momenta(TOTAL)
    top = int(np.argmax(lrs))
    assert top == 59 and lrs[top] == 1.0
    assert lrs[0] == pytest.approx(1 / 25) and lrs[-1] == pytest.approx(1 / 25 / 1e4)
    assert np.all(np.diff(lrs[: top + 1]) > 0) and np.all(np.diff(lrs[top:]) < 0)
    assert (
        momenta[0] == pytest.approx(0.95) and momenta[top] == pytest.approx(0.85) and momenta[-1] == pytest.approx(0.95)
    )
    assert parse_schedule({"name": "cosine"}).momenta(TOTAL) is None


def test_planned_rates_scale_with_the_peak_and_cover_every_step() -> None:
    cfg = TrialConfig.from_flat({"budget.compute": 128 * 16 * 50, "peak_lr": 0.02, "schedule.name": "cosine"})
    lrs = cfg.planned_lrs()
    assert cfg.total_steps == 50 and len(lrs) == 50
    assert lrs.max() == pytest.approx(0.02)


def test_rules_that_set_their_own_rate_have_no_plan() -> None:
    for name in ("armijo_sgd", "vsgd"):
        assert TrialConfig.from_flat({"budget.compute": 1e6, "optimizer.name": name}).planned_lrs() is None
    assert (
        TrialConfig.from_flat({"budget.compute": 1e6, "optimizer.name": "schedule_free_adamw"}).planned_lrs()
        is not None
    )


@pytest.mark.parametrize(
    "params, message",
    [
        (
            {"name": "wsd", "warmup_frac": 0.5, "decay_frac": 0.6},
            "warmup_frac (0.5) + decay_frac (0.6) must not exceed 1",
        ),
        ({"name": "explore_converge", "warmup_frac": 0.5, "explore_frac": 0.5}, "must be below 1"),
        ({"name": "one_cycle", "momentum_low": 0.99, "momentum_high": 0.9}, "momentum_low (0.99) must not exceed"),
        ({"name": "inverse_power", "decay_exponent": 1.5}, "decay_exponent"),
        ({"name": "power", "power_c": 0.5}, "power_c"),
        ({"name": "wsd", "decay_shape": "step"}, "decay_shape"),
        ({"name": "cosine", "step_frac": 0.5}, "step_frac\n  Value error, not a setting of cosine"),
        ({"decay_frac": 0.5}, "decay_frac\n  Value error, not a setting of constant"),
    ],
)
def test_invalid_schedule_parameters_are_named(params: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        parse_schedule(params)
