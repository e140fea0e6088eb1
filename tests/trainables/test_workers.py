"""Data-parallel training on two real gloo processes (no Ray): DistributedDataParallel takes one worker's steps."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from tests.conftest import TINY_32
from trainables.config import TrialConfig
from trainables.data.prepare import SweepData
from trainables.loop import train_lm
from trainables.workers import Workers

ROWS = 8
# Two workers' reports against one worker's: the same numbers up to the order of floating-point sums.
CURVE_RTOL = 1e-5


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(ROWS, 5, generator=generator, dtype=torch.float64), torch.randn(ROWS, 3, generator=generator)


def _gradients(workers: Workers) -> list[torch.Tensor]:
    """The gradients of one backward over this worker's rows of the batch (a mean loss), through ``prepare``."""
    model = _model()
    trained = workers.prepare(model)
    inputs, targets = _batch()
    loss = ((trained(workers.shard(inputs)) - workers.shard(targets).double()) ** 2).mean()
    loss.backward()
    return [param.grad.clone() for param in model.parameters()]


def _reductions(workers: Workers) -> dict[str, torch.Tensor]:
    values = torch.tensor([1.0, 10.0]) * (workers.rank + 1)
    return {"sum": workers.sum(values), "mean": workers.mean(values), "values": values}


def _train(workers: Workers, settings: dict[str, Any], data: SweepData) -> list[dict[str, Any]]:
    reports: list[dict[str, Any]] = []
    train_lm(TrialConfig.from_flat(settings), data, reports.append, workers=workers)
    return reports


def _worker(rank: int, folder: str, task: Callable[..., Any], args: tuple[Any, ...]) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=2)
    try:
        torch.save(task(Workers(rank, 2), *args), Path(folder) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _on_two_workers(tmp_path: Path, task: Callable[..., Any], *args: Any) -> list[Any]:
    """What ``task(workers, *args)`` returns on each of two gloo workers, rank 0's first."""
    mp.spawn(_worker, args=(str(tmp_path), task, args), nprocs=2, join=True)
    return [torch.load(tmp_path / f"rank{rank}.pt", weights_only=False) for rank in range(2)]


def test_two_workers_take_one_workers_gradients_under_ddp(tmp_path: Path) -> None:
    alone = _gradients(Workers())
    ranks = _on_two_workers(tmp_path, _gradients)
    for rank in ranks:
        for ours, whole in zip(rank, alone, strict=True):
            torch.testing.assert_close(ours, whole, rtol=1e-12, atol=1e-15)
    for first, second in zip(*ranks, strict=True):
        assert torch.equal(first, second)  # the same step on every worker, to the bit


def test_sums_and_means_are_over_the_workers_on_the_values_device(tmp_path: Path) -> None:
    for rank, reduced in enumerate(_on_two_workers(tmp_path, _reductions)):
        assert reduced["sum"].tolist() == [3.0, 30.0] and reduced["mean"].tolist() == [1.5, 15.0]
        assert reduced["sum"].device == reduced["values"].device
        assert reduced["values"].tolist() == [rank + 1.0, 10.0 * (rank + 1)]  # reduced into a copy
    alone = _reductions(Workers())
    assert alone["sum"].tolist() == alone["mean"].tolist() == [1.0, 10.0]


class _Tagged(nn.Module):
    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module


def test_prepare_wraps_only_among_several_workers_with_the_given_wrapping() -> None:
    model = nn.Linear(2, 2)
    assert Workers().prepare(model) is model
    assert Workers(0, 1, wrap=_Tagged).prepare(model) is model
    wrapped = Workers(1, 2, wrap=_Tagged).prepare(model)
    assert isinstance(wrapped, _Tagged) and wrapped.module is model


@pytest.mark.parametrize(
    "settings",
    [
        {"budget.compute": 5120},
        {"budget.compute": 10240, "patch.K": 2, "patch.lambda": 0.5, "schedule.name": "cosine", "gns": True},
        {"budget.compute": 5120, "micro_batch_size": 1},
    ],
    ids=["token-level", "patch-level with the noise scale", "two micro-batches per worker"],
)
def test_two_workers_report_one_workers_curve(tmp_path: Path, lee32: SweepData, settings: dict[str, Any]) -> None:
    settings = {**TINY_32, "batch_size": 8, "eval_every": 5, **settings}
    alone = _train(Workers(), settings, lee32)
    ranks = _on_two_workers(tmp_path, _train, settings, lee32)
    steps = [report["step"] for report in alone]
    assert len(steps) >= 4
    if "patch.K" in settings:
        assert {report["phase"] for report in alone} == {"patch", "token"}
    for reports in ranks:
        assert [report["step"] for report in reports] == steps
        assert reports[0]["workers"] == 2.0
        for key in ("train_loss", "val_loss"):
            ours, whole = [report[key] for report in reports], [report[key] for report in alone]
            assert ours == pytest.approx(whole, rel=CURVE_RTOL), key
        for key in ("compute", "tokens", "lr", "phase"):
            assert [report[key] for report in reports] == [report[key] for report in alone], key
    # Every worker reports the same numbers, the noise scale (measured across both) included.
    timings = ("wall_s", "tokens_per_s")
    first, second = ([{k: v for k, v in report.items() if k not in timings} for report in rank] for rank in ranks)
    assert first == second
    if settings.get("gns"):
        assert sum("gns" in report for report in first) >= len(first) - 2
