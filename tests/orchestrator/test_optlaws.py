"""The convergence-and-escape law: its features, its fit, the law registry, and ranking a spec's schedules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from orchestrator.cli.main import main
from orchestrator.curves import Curve
from orchestrator.laws import LAWS, read_law_fit
from orchestrator.optlaws.fit import OptLawFit, fit_optlaw
from orchestrator.optlaws.law import OptLawParams, optlaw_predict, schedule_features
from orchestrator.schedule_rank import rank_schedules, write_restricted_spec
from orchestrator.spec import load_spec
from search_spaces.build import grid_points
from tests.conftest import tiny_spec, write_spec
from trainables.config import TrialConfig
from trainables.schedules import parse_schedule

TRUE = OptLawParams(L_inf=2.0, A=0.5, alpha=0.6, B=40.0, kappa=30.0, D=0.2, epsilon=5e-3)
REPO = Path(__file__).resolve().parents[2]
CURVES = REPO / "benchmarks" / "curves" / "mpl_small"


def _rates(peak: float, steps: int = 3000, **schedule: object) -> np.ndarray:
    return peak * parse_schedule(schedule).multipliers(steps, peak=peak, batch_size=16, tokens_per_step=1024)


def test_the_noise_feature_relaxes_to_each_new_rate_as_the_recurrence_says() -> None:
    lrs = np.r_[np.full(50, 1e-2), np.full(50, 2e-3)]
    kappa = 40.0
    noise, by_hand = schedule_features(lrs, np.arange(1, 101), kappa, 0.01).noise, []
    settled = 0.0
    for rate in lrs:  # dN/dS = kappa (eta - N), held over each step's area eta
        settled = rate + (settled - rate) * np.exp(-kappa * rate)
        by_hand.append(settled)
    np.testing.assert_allclose(noise, by_hand, rtol=1e-10)


def test_the_escape_feature_is_the_chance_of_at_least_one_kramers_escape() -> None:
    lrs = np.r_[np.full(10, 4e-3), np.zeros(5), np.full(10, 1e-3)]
    escape = schedule_features(lrs, np.array([25]), 1.0, 2e-3).escape[0]
    expected = 1 - np.exp(-(10 * 4e-3 * np.exp(-0.5) + 10 * 1e-3 * np.exp(-2.0)))
    assert escape == pytest.approx(expected, rel=1e-12)


def test_the_fit_recovers_the_law_s_own_parameters() -> None:
    steps = np.arange(100, 3001, 100)
    schedules = [
        _rates(3e-3, name="constant"),
        _rates(3e-3, name="cosine"),
        _rates(6e-3, name="two_step", step_frac=0.5, step_factor=0.1),
        _rates(1e-3, name="wsd", decay_frac=0.2),
    ]
    curves = [Curve(f"c{i}", lrs, steps, optlaw_predict(TRUE, lrs, steps)) for i, lrs in enumerate(schedules)]
    fit = fit_optlaw(curves)
    for name, value in TRUE.as_dict().items():
        assert getattr(fit.params, name) == pytest.approx(value, rel=0.02), name
    assert fit.fitted_peak_range() == pytest.approx((1e-3, 6e-3))


def test_ranking_orders_a_spec_s_schedules_by_the_law_s_final_loss(tmp_path: Path) -> None:
    spec_path = write_spec(
        tmp_path / "spec.yaml",
        tiny_spec(
            search={
                "peak_lr": {"loguniform": [1e-3, 8e-3]},
                "schedule.name": {"choice": ["constant", "cosine", "wsd"]},
                "schedule.decay_frac": {"uniform": [0.1, 0.3], "when": {"schedule.name": ["wsd"]}},
                "batch_size": {"choice": [8, 16]},
            }
        ),
    )
    spec = load_spec(spec_path)
    fit = OptLawFit(TRUE, 0.0, (1e-3, 4e-3))
    ranked = rank_schedules(spec, fit, levels=3)
    assert len(ranked) == 3 * (1 + 1 + 3)  # peak levels x (constant, cosine, wsd x decay levels)
    assert {r.point["batch_size"] for r in ranked} == {8}  # a knob that is not the schedule's stays at one value
    finals = [r.predicted_final for r in ranked]
    assert finals == sorted(finals)
    for candidate in ranked:
        lrs = TrialConfig.from_flat(spec.fixed_config() | candidate.point).planned_lrs()
        assert candidate.predicted_final == pytest.approx(optlaw_predict(TRUE, lrs, [len(lrs)])[0])
        assert candidate.beyond_fitted_peaks == (candidate.point["peak_lr"] > 4e-3 + 1e-12)

    restricted = write_restricted_spec(spec_path, ranked[:2], tmp_path / "top.yaml")
    grid = grid_points([k for k in restricted.knobs if k.name.startswith(("peak_lr", "schedule."))])
    for candidate in ranked[:2]:
        assert {k: v for k, v in candidate.point.items() if k != "batch_size"} in grid
    assert restricted.name == f"{spec.name}_top2"


def test_law_fit_and_rank_commands_on_recorded_curves(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fits, predicted = sorted(CURVES.glob("fit_*.csv")), sorted(CURVES.glob("predict_*.csv"))
    out = tmp_path / "fit.json"
    argv = ["law", "fit", "--law", "optlaws", "--fit", *map(str, fits), "--predict", *map(str, predicted)]
    assert main([*argv, "--min-step", "1500", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["law"] == "optlaws" and set(report["predicted"]) == set(map(str, predicted))
    for scores in [*report["fitted"].values(), *report["predicted"].values()]:
        assert set(scores) == {"r2", "mae", "rmse", "final_rel_error", "worst_rel_error"}
        assert scores["r2"] > 0.9 and scores["final_rel_error"] < 0.05  # real curves, predicted from their rates
    assert isinstance(read_law_fit(out), LAWS.load("optlaws"))

    top = tmp_path / "top.yaml"
    spec = REPO / "search_spaces" / "planned_schedules.yaml"
    assert main(["law", "rank", str(spec), "--fit", str(out), "--top", "2", "--out", str(top)]) == 0
    printed = capsys.readouterr().out
    assert "ranked by predicted final loss; the best 2:" in printed and f"wrote {top}" in printed
    assert load_spec(top).name == "planned_schedules_top2"


def test_a_fit_file_of_another_kind_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "fit.json"
    bad.write_text(json.dumps({"law": "optlaws", "fit": {"shared": {}}}))
    with pytest.raises(ValueError, match=r"fit\.json: not a fit written by 'effsweep law fit --json'"):
        read_law_fit(bad)
    bad.write_text(json.dumps({"law": "newton", "fit": {}}))
    with pytest.raises(ValueError, match="unknown law 'newton'"):
        read_law_fit(bad)
