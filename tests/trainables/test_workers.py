"""Data-parallel gradient averaging on two real gloo processes (no Ray): one worker's step, bit for bit close."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from trainables.workers import Workers

ROWS = 8


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(ROWS, 5, generator=generator, dtype=torch.float64), torch.randn(ROWS, 3, generator=generator)


def _gradients(workers: Workers, backwards: int) -> list[torch.Tensor]:
    """The gradients after ``backwards`` backward passes over this worker's rows of the batch (a mean loss)."""
    model = _model()
    workers.average_gradients(model)
    inputs, targets = _batch()
    for _ in range(backwards):
        loss = ((model(workers.shard(inputs)) - workers.shard(targets).double()) ** 2).mean()
        loss.backward()
    return [param.grad.clone() for param in model.parameters()]


def _worker(rank: int, folder: str, backwards: int) -> None:
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=2)
    try:
        torch.save(_gradients(Workers(rank, 2), backwards), Path(folder) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _two_worker_gradients(tmp_path: Path, backwards: int) -> list[list[torch.Tensor]]:
    mp.spawn(_worker, args=(str(tmp_path), backwards), nprocs=2, join=True)
    return [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]


def test_two_workers_take_one_workers_gradients_in_one_all_reduce(tmp_path: Path) -> None:
    alone = _gradients(Workers(), backwards=1)
    ranks = _two_worker_gradients(tmp_path, backwards=1)
    for rank in ranks:
        for ours, whole in zip(rank, alone, strict=True):
            torch.testing.assert_close(ours, whole, rtol=1e-12, atol=1e-15)
    for first, second in zip(*ranks, strict=True):
        assert torch.equal(first, second)  # the same step on every worker, to the bit


def test_gradients_accumulated_over_two_backwards_stay_averaged(tmp_path: Path) -> None:
    alone = _gradients(Workers(), backwards=2)
    for rank in _two_worker_gradients(tmp_path, backwards=2):
        for ours, whole in zip(rank, alone, strict=True):
            torch.testing.assert_close(ours, whole, rtol=1e-12, atol=1e-15)
