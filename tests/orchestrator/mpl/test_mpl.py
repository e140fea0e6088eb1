"""The Multi-Power Law: the formula by hand, the fit on synthetic curves, logged curves and bad CSVs."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from orchestrator.cli.main import main
from orchestrator.curves import Curve, CurveError, prediction_scores
from orchestrator.mpl.fit import MPLFit, choose_min_step, fit_mpl
from orchestrator.spec import SpecError, parse_spec
from tests.conftest import tiny_spec
from trainables.config import TrialConfig
from trainables.laws.multipower import MPLParams, mpl_final_loss, mpl_predict, schedule_terms
from trainables.schedules import parse_schedule

TRUE = MPLParams(L0=2.2, A=0.6, alpha=0.45, B=350.0, C=2.0, beta=0.6, gamma=0.55)
PEAK, T = 3e-3, 3000


def _rates(steps: int = T, **schedule: object) -> np.ndarray:
    return PEAK * parse_schedule(schedule).multipliers(steps, peak=PEAK, batch_size=16, tokens_per_step=1024)


def _synthetic(name: str, lrs: np.ndarray, noise: float, seed: int, transient: float = 0.0) -> Curve:
    """A curve logged every 100 steps whose losses follow the law for the rates the log implies.

    A log keeps one rate per 100 steps; a sharp drop becomes a 100-step ramp
    once interpolated. The losses here come from that interpolated schedule,
    so the true parameters are exactly recoverable. ``transient`` adds a
    fresh model's fast early fall, which the law does not describe:
    ``transient * exp(-step / 200)``.
    """
    steps = np.arange(100, len(lrs) + 1, 100)
    logged = Curve.from_log(name, steps, lrs[steps - 1], np.ones(len(steps)))
    law = mpl_predict(TRUE, logged.lrs, steps) + transient * np.exp(-steps / 200.0)
    losses = law * (1 + noise * np.random.default_rng(seed).normal(size=len(steps)))
    return Curve.from_log(name, steps, lrs[steps - 1], losses)


def test_a_constant_rate_has_no_decay_term() -> None:
    lrs = np.full(500, 2e-3)
    steps = np.array([1, 250, 500])
    expected = TRUE.L0 + TRUE.A * (2e-3 * steps) ** (-TRUE.alpha)
    np.testing.assert_allclose(mpl_predict(TRUE, lrs, steps), expected)


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_curves_without_a_decrease_fit_without_a_decay_term() -> None:
    fit = fit_mpl([_synthetic("constant", _rates(name="constant"), 1e-3, 0)], per_curve=())
    assert fit.shared["B"] == 0.0
    assert fit.shared["L0"] == pytest.approx(TRUE.L0, rel=0.05) and fit.relative_rmse < 3e-3


def test_one_drop_by_hand() -> None:
    high, low, n_high = 3e-3, 1e-3, 200
    lrs = np.concatenate([np.full(n_high, high), np.full(300, low)])
    t = np.array([150, 200, 201, 350, 500])
    area = np.where(t <= n_high, high * t, high * n_high + low * (t - n_high))
    after_drop = np.where(t > n_high, low * (t - n_high), 0.0)  # S_k(t): the drop is step 201's
    x = low ** (-TRUE.gamma) * after_drop
    decay = TRUE.B * (high - low) * (1 - (TRUE.C * x + 1) ** (-TRUE.beta))
    expected = TRUE.L0 + TRUE.A * area ** (-TRUE.alpha) - decay
    np.testing.assert_allclose(mpl_predict(TRUE, lrs, t), expected)
    assert expected[2] < expected[1] - 0.01  # the loss falls right after the drop


def test_warmup_rises_are_not_decreases() -> None:
    warm = np.concatenate([np.linspace(1e-4, 3e-3, 50), np.full(100, 3e-3)])
    terms = schedule_terms(warm, np.array([60, 150]))
    assert len(terms.drops) == 0
    np.testing.assert_allclose(terms.power_area, np.cumsum(warm)[[59, 149]])


def test_logged_rows_are_interpolated_with_a_warmup_from_zero() -> None:
    curve = Curve.from_log("log", [100, 200, 300], [1e-3, 2e-3, 2e-3], [3.0, 2.5, 2.4])
    np.testing.assert_allclose(curve.lrs[[0, 49, 99, 149, 299]], [1e-5, 5e-4, 1e-3, 1.5e-3, 2e-3])
    given = Curve.from_log("log", [0, 100, 200], [2e-3, 2e-3, 1e-3], [5.5, 2.5, 2.4])
    assert given.lrs[0] == pytest.approx(2e-3) and given.steps.tolist() == [100, 200]  # no loss before step 1


def test_the_fit_recovers_known_parameters_from_noisy_curves() -> None:
    curves = [
        _synthetic("constant", _rates(name="constant"), 1e-3, 0),
        _synthetic("cosine", _rates(name="cosine", min_lr_frac=0.0), 1e-3, 1),
        _synthetic("two_step", _rates(name="two_step"), 1e-3, 2),
    ]
    fit = fit_mpl(curves, per_curve=())
    assert fit.shared["alpha"] == pytest.approx(TRUE.alpha, rel=0.1)
    assert fit.shared["L0"] == pytest.approx(TRUE.L0, rel=0.02)
    assert fit.shared["B"] == pytest.approx(TRUE.B, rel=0.2)
    assert fit.relative_rmse < 3e-3
    # What the fit is for: a schedule it never saw, predicted from its rates alone.
    held_out = _synthetic("wsd", _rates(name="wsd", decay_shape="exp"), 0.0, 3)
    scores = prediction_scores(fit.predict(held_out.lrs, held_out.steps), held_out.losses)
    assert scores["final_rel_error"] < 5e-3 and scores["r2"] > 0.99


FIT_SET = {"constant": {"name": "constant"}, "cosine": {"name": "cosine", "min_lr_frac": 0.0}, "two_step": {}}


def _with_transient() -> list[Curve]:
    return [
        _synthetic(name, _rates(**{"name": name, **s}), 1e-3, i, 0.8) for i, (name, s) in enumerate(FIT_SET.items())
    ]


def test_a_fixed_parameter_profiles_the_fit() -> None:
    curves = [_synthetic(n, _rates(**{"name": n, **s}), 1e-3, i) for i, (n, s) in enumerate(FIT_SET.items())]
    at_truth = fit_mpl(curves, per_curve=(), bounds={"C": (TRUE.C, TRUE.C)})
    far_off = fit_mpl(curves, per_curve=(), bounds={"C": (60.0, 60.0)})
    assert at_truth.shared["C"] == pytest.approx(TRUE.C, rel=1e-5) and far_off.shared["C"] == pytest.approx(60.0)
    assert at_truth.shared["gamma"] == pytest.approx(TRUE.gamma, rel=0.1)
    assert far_off.relative_rmse > 2 * at_truth.relative_rmse
    with pytest.raises(ValueError, match=r"only be given for .*'L0'"):
        fit_mpl(curves, per_curve=(), bounds={"L0": (1.0, 2.0)})
    with pytest.raises(ValueError, match=r"bounds for beta .* got \(0.5, 0.2\)"):
        fit_mpl(curves, per_curve=(), bounds={"beta": (0.5, 0.2)})


def test_auto_min_step_leaves_out_the_transient_and_extrapolates_better() -> None:
    fitted = _with_transient()
    first = choose_min_step(fitted)
    assert first >= 600  # the transient is 2% of the loss at step 600, 0.2% at 1,000
    long_wsd = _synthetic("wsd_3x", _rates(3 * T, name="wsd"), 0.0, 9, 0.8)
    errors = {}
    for start in (0, first):
        fit = fit_mpl([c.from_step(start) for c in fitted], per_curve=())
        errors[start] = abs(fit.predict(long_wsd.lrs, long_wsd.steps[-1:])[0] / long_wsd.losses[-1] - 1.0)
    assert errors[first] < 0.01 < errors[0]
    too_short = [Curve.from_log(c.name, c.steps[:4], c.lrs[c.steps[:4] - 1], c.losses[:4]) for c in fitted]
    with pytest.raises(CurveError, match="needs at least 3 rows in the first 60% of every fitted curve"):
        choose_min_step(too_short)


def test_mpl_fit_command_chooses_the_first_step_or_names_a_bad_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = []
    for curve in _with_transient():
        paths.append(tmp_path / f"{curve.name}.csv")
        rows = {"step": curve.steps, "lr": curve.lrs[curve.steps - 1], "loss": curve.losses}
        pd.DataFrame(rows).to_csv(paths[-1], index=False)
    out = tmp_path / "fit.json"
    assert main(["mpl", "fit", "--fit", *map(str, paths), "--min-step", "auto", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["min_step"] >= 600
    assert f"fitting from step {report['min_step']} (chosen by --min-step auto)" in capsys.readouterr().out
    png = tmp_path / "law.png"
    assert main(["mpl", "plot", "--fit", *map(str, paths), "--min-step", "auto", "--out", str(png)]) == 0
    assert png.read_bytes().startswith(b"\x89PNG")
    with pytest.raises(SystemExit):
        main(["mpl", "fit", "--fit", str(paths[0]), "--min-step", "soon"])
    assert "argument --min-step: must be a whole number of steps or 'auto', got 'soon'" in capsys.readouterr().err


def test_per_curve_fits_share_the_decay_and_own_their_offsets() -> None:
    lrs = _rates(name="cosine", min_lr_frac=0.0)
    steps = np.arange(100, T + 1, 100)
    curves = []
    for i, shift in enumerate((0.0, 0.3)):
        losses = mpl_predict(TRUE, lrs, steps) + shift
        curves.append(Curve.from_log(f"trial{i}", steps, lrs[steps - 1], losses))
    fit = fit_mpl(curves, per_curve=("L0", "A"))
    l0_a, l0_b = fit.per_curve["trial0"][0], fit.per_curve["trial1"][0]
    assert l0_b - l0_a == pytest.approx(0.3, abs=0.02)
    assert "L0" not in fit.shared
    again = MPLFit.from_json(fit.to_json())
    assert again.params("trial1") == fit.params("trial1")


def test_a_sweep_fit_shares_l0_and_gives_each_curve_its_own_amplitude() -> None:
    steps = np.arange(100, T + 1, 100)
    curves = []
    for i, (name, amplitude) in enumerate((("cosine", 0.5), ("wsd", 0.7), ("constant", 0.6))):
        lrs = _rates(name=name, **({} if name == "constant" else {"min_lr_frac": 0.0}))
        losses = mpl_predict(replace(TRUE, A=amplitude), lrs, steps)
        curves.append(Curve.from_log(f"trial{i}", steps, lrs[steps - 1], losses))
    fit = fit_mpl(curves, per_curve=("A",))
    assert fit.shared["L0"] == pytest.approx(TRUE.L0, rel=0.02)
    amplitudes = np.array([fit.per_curve[f"trial{i}"][1] for i in range(3)])
    # A trades off against alpha a little (an equally good fit); their ratios are pinned.
    assert amplitudes / amplitudes[0] == pytest.approx([1.0, 1.4, 1.2], rel=0.02)
    assert fit.relative_rmse < 5e-3
    assert {fit.per_curve[f"trial{i}"][0] for i in range(3)} == {fit.shared["L0"]}
    with pytest.raises(ValueError, match=r"per_curve must be .* got \('L0',\)"):
        fit_mpl(curves, per_curve=("L0",))


@pytest.mark.parametrize(
    "content, message",
    [
        ("step,lr\n1,0.1\n", r"missing column\(s\) loss; need step, lr, loss"),
        ("step,lr,loss\n100,1e-3,3.0\n50,1e-3,2.9\n", r"steps must increase; row 2 has step 50 after 100"),
        ("step,lr,loss\n100,1e-3,3.0\n200,,2.9\n", r"row 2 has a missing or non-finite lr"),
        ("step,lr,loss\n100,1e-3,3.0\n200,1e-3,nan\n", r"row 2 has a missing or non-finite loss"),
        ("step,lr,loss\n100,1e-3,abc\n", r"step, lr and loss must be numbers"),
        ("step,lr,loss\n100,1e-3,3.0\n", r"needs at least two rows, got 1"),
        ("", r"not a readable CSV"),
    ],
    ids=["missing column", "steps backwards", "missing rate", "nan loss", "text", "one row", "empty"],
)
def test_bad_curves_are_explained(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "curve.csv"
    path.write_text(content)
    with pytest.raises(CurveError, match=rf"curve\.csv: .*{message}|{message}"):
        Curve.read_csv(path)


def test_scores_of_a_perfect_prediction() -> None:
    observed = np.array([3.0, 2.5, 2.2])
    scores = prediction_scores(observed.copy(), observed)
    assert scores == {"r2": 1.0, "mae": 0.0, "rmse": 0.0, "final_rel_error": 0.0, "worst_rel_error": 0.0}
    assert math.isclose(prediction_scores(observed * 1.01, observed)["worst_rel_error"], 0.01)


def test_the_differentiable_final_loss_is_the_law_at_the_last_step() -> None:
    for lrs in (_rates(name="cosine", min_lr_frac=0.0), _rates(name="wsd", decay_shape="exp")):
        expected = mpl_predict(TRUE, lrs, np.array([T]))[0]
        assert float(mpl_final_loss(TRUE, torch.as_tensor(lrs))) == pytest.approx(expected, rel=1e-10)


def test_the_mpl_optimal_schedule_beats_cosine_and_wsd_under_its_law() -> None:
    optimal = _rates(name="mpl_optimal", warmup_frac=0.02, mpl_law=TRUE.as_dict())
    after_warmup = optimal[round(0.02 * T) :]
    assert np.all(np.diff(after_warmup) <= 0) and after_warmup[0] == pytest.approx(PEAK)
    assert after_warmup[-1] < 0.2 * PEAK  # it anneals, as the paper's optimal schedules do
    final = {
        name: mpl_predict(TRUE, lrs, np.array([T]))[0]
        for name, lrs in (
            ("optimal", optimal),
            ("cosine", _rates(name="cosine", warmup_frac=0.02, min_lr_frac=0.0)),
            ("wsd", _rates(name="wsd", warmup_frac=0.02, min_lr_frac=0.0)),
        )
    }
    assert final["optimal"] < min(final["cosine"], final["wsd"])


def test_mpl_optimal_plans_each_phase_of_a_patch_trial() -> None:
    law = {f"schedule.mpl_law.{k}": v for k, v in TRUE.as_dict().items()}
    settings = {"budget.compute": 2e6, "patch.K": 4, "patch.lambda": 0.5, "schedule.name": "mpl_optimal", **law}
    config = TrialConfig.from_flat(settings)
    rates = config.planned_lrs()
    assert len(rates) == sum(config.phase_steps) and rates.max() == pytest.approx(config.peak_lr)
    without_patch = TrialConfig.from_flat({**settings, "patch.K": 1, "patch.lambda": 0.0})
    assert len(without_patch.planned_lrs()) == without_patch.phase_steps[1]  # an empty patch phase


def test_mpl_optimal_without_a_law_names_what_to_set() -> None:
    with pytest.raises(ValueError, match=r"mpl_optimal needs the fitted law: set schedule.mpl_fit"):
        parse_schedule({"name": "mpl_optimal"})


def test_a_spec_names_the_fit_and_trials_get_its_law(tmp_path: Path) -> None:
    fit = MPLFit(TRUE.as_dict(), {}, 0.001)
    (tmp_path / "fit.json").write_text(json.dumps({"fit": fit.to_json()}))
    train = {"schedule.name": "mpl_optimal", "schedule.mpl_fit": str(tmp_path / "fit.json")}
    search = {"peak_lr": {"choice": [1e-3, 3e-3]}}
    spec = parse_spec(tiny_spec(train=train, search=search))
    config = TrialConfig.from_flat(spec.fixed_config())
    assert config.schedule.mpl_law.params() == TRUE
    with pytest.raises(SpecError, match=r"train.schedule.mpl_fit: .*missing.json: no such fit file"):
        parse_spec(tiny_spec(train={**train, "schedule.mpl_fit": str(tmp_path / "missing.json")}, search=search))
    with pytest.raises(SpecError, match=r"train.schedule.mpl_fit: .*not a sweep folder with an MPL fit"):
        parse_spec(tiny_spec(train={**train, "schedule.mpl_fit": str(tmp_path)}, search=search))
