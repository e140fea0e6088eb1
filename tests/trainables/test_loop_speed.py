"""The loop's speed settings on real text: micro-batches, bf16 autocast, compilation and throughput reports."""

from __future__ import annotations

import shutil
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from tests.conftest import TINY_32
from trainables import loop as loop_module
from trainables.config import TrialConfig
from trainables.data.prepare import SweepData
from trainables.loop import train_lm
from trainables.model import flops_per_token
from trainables.throughput import peak_flops

SETTINGS = {**TINY_32, "budget.compute": 40_960, "batch_size": 16, "eval_every": 20, "schedule.name": "cosine"}
# Micro-batches sum the same gradient in another order: equal up to float32 rounding.
ACCUMULATION_RTOL = 1e-4


def _reports(data: SweepData, **settings: Any) -> list[dict[str, Any]]:
    reports: list[dict[str, Any]] = []
    train_lm(TrialConfig.from_flat({**SETTINGS, **settings}), data, reports.append)
    return reports


def _curve(reports: list[dict[str, Any]], key: str = "val_loss") -> list[float]:
    return [report[key] for report in reports]


def test_four_micro_batches_take_the_step_of_the_whole_batch(lee32: SweepData) -> None:
    whole = _reports(lee32)
    assert _curve(_reports(lee32, micro_batch_size=16)) == _curve(whole)  # one micro-batch: the same arithmetic
    quarters = _reports(lee32, micro_batch_size=4)
    for key in ("train_loss", "val_loss"):
        assert _curve(quarters, key) == pytest.approx(_curve(whole, key), rel=ACCUMULATION_RTOL), key
    assert _curve(quarters, "tokens") == _curve(whole, "tokens")
    # Uneven micro-batches (6, 6, 4) weigh each by its rows.
    uneven = _reports(lee32, micro_batch_size=6)
    assert _curve(uneven) == pytest.approx(_curve(whole), rel=ACCUMULATION_RTOL)


def test_bf16_autocast_trains_on_cpu_and_differs_from_fp32(lee32: SweepData) -> None:
    fp32 = _reports(lee32)
    bf16 = _reports(lee32, precision="bf16")
    assert bf16[-1]["val_loss"] < bf16[0]["val_loss"] - 0.2
    assert abs(bf16[-1]["val_loss"] - fp32[-1]["val_loss"]) < 0.1
    assert _curve(bf16) != _curve(fp32)  # the forward did run in bfloat16


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None, reason="no C++ compiler for Inductor")
def test_a_compiled_trial_trains_as_the_eager_one(lee32: SweepData) -> None:
    eager = _reports(lee32)
    compiled = _reports(lee32, compile=True)
    assert compiled[-1]["val_loss"] < compiled[0]["val_loss"] - 0.2
    # Fused kernels round differently; the curve stays the eager one's to well within its fall.
    assert _curve(compiled) == pytest.approx(_curve(eager), abs=2e-2)


def test_every_report_says_its_throughput_and_mfu_follows_from_it(
    lee32: SweepData, monkeypatch: pytest.MonkeyPatch
) -> None:
    reports = _reports(lee32)
    assert all(report["tokens_per_s"] > 0 for report in reports)
    assert not any("mfu" in report for report in reports)  # no known peak for a CPU
    peak = 1e12
    monkeypatch.setattr(loop_module, "peak_flops", lambda device, precision: peak)
    cfg = TrialConfig.from_flat(SETTINGS)
    for report in _reports(lee32):
        # Token level: the work done is the data read, so MFU is FLOPs per token x tokens/s over the peak.
        assert report["mfu"] == pytest.approx(flops_per_token(cfg.model) * report["tokens_per_s"] / peak, rel=1e-9)


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"optimizer.name": "armijo_sgd", "precision": "bf16"}, "precision must be fp32"),
        ({"optimizer.name": "vsgd", "micro_batch_size": 4}, "micro_batch_size 4 must not be below batch_size 16"),
        ({"precision": "fp16"}, "precision"),
        ({"micro_batch_size": 0}, "micro_batch_size"),
    ],
)
def test_settings_a_rule_cannot_train_with_are_refused(settings: dict[str, Any], named: str) -> None:
    flat = {**SETTINGS, **settings}
    if flat.get("optimizer.name") in ("armijo_sgd", "vsgd"):
        flat["schedule.name"] = "constant"
    with pytest.raises(ValidationError, match=named):
        TrialConfig.from_flat(flat)


@pytest.mark.parametrize(
    ("name", "precision", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", "bf16", 989e12),
        ("NVIDIA H100 PCIe", "bf16", 756e12),
        ("NVIDIA H200", "fp32", 495e12),  # fp32 trains on TF32 tensor cores
        ("NVIDIA L40S", "bf16", 362e12),
        ("NVIDIA L4", "bf16", 121e12),
        ("NVIDIA GeForce GTX 1080", "bf16", None),  # not in the table: no MFU rather than a guess
    ],
)
def test_peaks_are_looked_up_by_device_name(
    monkeypatch: pytest.MonkeyPatch, name: str, precision: str, peak: float | None
) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    assert peak_flops("cuda:0", precision) == peak
    assert peak_flops("cpu", precision) is None
    with pytest.raises(ValueError, match="precision must be fp32 or bf16, got 'fp16'"):
        peak_flops("cuda:0", "fp16")
