"""The training loop on real text: loss falls, runs repeat exactly, divergence ends a run."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from trainables.config import TrialConfig
from trainables.data.prepare import SweepData, prepare_sweep_data
from trainables.loop import DIVERGED, OBJECTIVE, REPORTED_METRICS, evaluate, train_lm
from trainables.model import GPT, ModelConfig

TINY = {"model.seq_len": 64, "model.n_layer": 2, "model.n_head": 2, "model.d_model": 64}


@pytest.fixture(scope="module")
def lee(tmp_path_factory: pytest.TempPathFactory) -> SweepData:
    return prepare_sweep_data(
        "gensim:lee_background",
        val_fraction=0.1,
        seed=0,
        seq_len=64,
        eval_tokens=4096,
        cache_dir=tmp_path_factory.mktemp("cache"),
    )


def _windows(data: SweepData) -> torch.Tensor:
    return torch.from_numpy(data.val_windows.astype(np.int64))


def _run(data: SweepData, **overrides: Any) -> tuple[list[dict[str, float]], Any]:
    settings = {**TINY, "budget.compute": 160_000, "batch_size": 16, "eval_every": 30, **overrides}
    cfg = TrialConfig.from_flat(settings)
    reports: list[dict[str, float]] = []
    outcome = train_lm(cfg, data, reports.append)
    return reports, outcome


def test_loss_falls_on_real_text(lee: SweepData) -> None:
    torch.manual_seed(0)
    untrained = evaluate(GPT(ModelConfig(**{k.split(".")[1]: v for k, v in TINY.items()})), _windows(lee))
    assert untrained == pytest.approx(math.log(257), abs=0.1)  # a uniform guess over 257 tokens
    # Long enough to leave the unigram plateau (about 3.05 nats) that small byte models sit on first.
    reports, outcome = _run(lee, **{"budget.compute": 250_000})
    assert outcome.status == "completed"
    first, last = reports[0]["val_loss"], reports[-1]["val_loss"]
    assert last < first - 0.3, (first, last)
    assert last < untrained - 2.5


def test_reports_carry_the_metrics_every_issue_relies_on(lee: SweepData) -> None:
    reports, outcome = _run(lee)
    cfg = TrialConfig.from_flat({**TINY, "budget.compute": 160_000, "batch_size": 16, "eval_every": 30})
    steps = [r["step"] for r in reports]
    assert steps == [*range(30, cfg.total_steps, 30), cfg.total_steps]
    lrs = cfg.planned_lrs()
    for report in reports:
        assert set(REPORTED_METRICS) <= set(report)
        assert report["tokens"] == report["compute"] == report["step"] * 16 * 64
        assert report["lr"] == pytest.approx(lrs[report["step"] - 1])
        assert report["lr_sum"] == pytest.approx(lrs[: report["step"]].sum())
    assert OBJECTIVE not in reports[0]
    assert reports[-1][OBJECTIVE] == reports[-1]["val_loss"] == outcome.final_val_loss
    assert all(b["wall_s"] > a["wall_s"] for a, b in itertools.pairwise(reports))


def test_same_seed_same_curve_other_seed_other_curve(lee: SweepData) -> None:
    def curve(reports: list[dict[str, float]]) -> list[tuple[float, ...]]:
        return [(r["step"], r["train_loss"], r["val_loss"]) for r in reports]

    a, _ = _run(lee, seed=3)
    b, _ = _run(lee, seed=3)
    c, _ = _run(lee, seed=4)
    assert curve(a) == curve(b)
    assert curve(a) != curve(c)


def test_divergence_ends_the_run_with_a_diverged_report(lee: SweepData) -> None:
    reports, outcome = _run(lee, peak_lr=1e4, **{"optimizer.name": "sgd", "grad_clip": 0.0})
    assert outcome.status == "diverged" and outcome.final_val_loss is None
    last = reports[-1]
    assert last[DIVERGED] == 1.0 and OBJECTIVE not in last
    assert not np.isfinite(last["train_loss"]) and math.isnan(last["val_loss"])
    assert last["step"] == 30 and len(reports) == 1  # at the first report, where the loss is read


def test_sweep_data_is_shareable_between_trials(lee: SweepData, tmp_path: Path) -> None:
    before = lee.train.tokens.copy()
    _run(lee)
    np.testing.assert_array_equal(lee.train.tokens, before)  # trials never mutate the shared data


class _Interrupted(Exception):
    pass


@pytest.mark.parametrize(
    "settings",
    [
        {"patch.K": 2, "patch.lambda": 0.5, "schedule.name": "cosine"},
        {"optimizer.name": "armijo_sgd"},
        {"optimizer.name": "schedule_free_adamw"},
    ],
    ids=["adamw with patch phase", "line search", "schedule-free"],
)
def test_a_run_resumed_from_its_checkpoint_goes_on_exactly(lee: SweepData, settings: dict[str, Any]) -> None:
    cfg = TrialConfig.from_flat({**TINY, "budget.compute": 120_000, "batch_size": 8, "eval_every": 10,
                                 "checkpoint_every": 2, **settings})  # fmt: skip
    whole: list[dict[str, Any]] = []
    train_lm(cfg, lee, whole.append, save=lambda metrics, state: whole.append(metrics))

    before: list[dict[str, Any]] = []
    saved: list[dict[str, Any]] = []

    def save_then_die(metrics: dict[str, Any], state: dict[str, Any]) -> None:
        before.append(metrics)
        saved.append(state)
        if len(saved) == 2:  # the worker is lost right after its second checkpoint
            raise _Interrupted

    with pytest.raises(_Interrupted):
        train_lm(cfg, lee, before.append, save=save_then_die)
    after: list[dict[str, Any]] = []
    train_lm(cfg, lee, after.append, save=lambda metrics, state: after.append(metrics), resume=saved[-1])
    assert after[0]["step"] > before[0]["step"]  # it went on, not from the start
    resumed = before + after
    assert [r["step"] for r in resumed] == [r["step"] for r in whole]
    for key in ("val_loss", "train_loss", "compute", "tokens", "lr_sum"):
        assert [r[key] for r in resumed] == pytest.approx([r[key] for r in whole], rel=1e-6), key
    assert resumed[-1][OBJECTIVE] == pytest.approx(whole[-1][OBJECTIVE], rel=1e-6)


def test_the_noise_scale_is_reported_and_measuring_it_changes_nothing(lee: SweepData) -> None:
    plain, _ = _run(lee, eval_every=20)
    measured, _ = _run(lee, eval_every=20, gns=True)
    assert [r["val_loss"] for r in measured] == [r["val_loss"] for r in plain]  # training is untouched
    values = [r["gns"] for r in measured if "gns" in r]
    assert len(values) >= len(measured) - 2 and all(0 < v < 1e6 for v in values)
    assert "gns" not in plain[-1]


def test_a_target_loss_ends_the_run_where_it_is_reached(lee: SweepData) -> None:
    whole, _ = _run(lee, eval_every=10)
    hit = next(i for i, r in enumerate(whole) if i >= 3 and r["val_loss"] < whole[i - 1]["val_loss"])
    target = (whole[hit - 1]["val_loss"] + whole[hit]["val_loss"]) / 2  # crossed between two reports
    stopped, outcome = _run(lee, eval_every=10, target_loss=target)
    assert len(stopped) == hit + 1 and outcome.steps == whole[hit]["step"]
    last = stopped[-1]
    assert last["reached_target"] == 1.0 and last[OBJECTIVE] == last["val_loss"] <= target
    assert whole[hit - 1]["step"] < last["steps_to_target"] < whole[hit]["step"]
    unreachable, _ = _run(lee, eval_every=10, target_loss=0.01)
    assert len(unreachable) == len(whole) and unreachable[-1]["reached_target"] == 0.0
    assert "steps_to_target" not in unreachable[-1]
