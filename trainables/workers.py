"""Data-parallel training: each worker trains on its rows of one global batch, under ``DistributedDataParallel``.

``prepare`` wraps the module the loop trains through, so every step is the
one a single worker would take on the whole batch; ``sum`` and ``mean``
reduce losses and evaluation sums on the training device, so every worker
reports the same numbers (docs/patch.md: one wrapper covers both phases).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

# Every worker's batcher is seeded alike, so the workers draw the same global batch and each takes
# ``rank::world_size`` of its rows. Step rules that choose their own rate from the loss would choose
# differently on each worker's rows: they run on one worker only (``single_worker_only``).


@dataclass(frozen=True)
class Workers:
    """This process's place among the trial's workers (rank 0 of 1 when training alone).

    ``wrap`` makes a module data-parallel among several workers; by default ``DistributedDataParallel``
    over the default process group (a Ray Train worker passes ``ray.train.torch.prepare_model``).

    Example:
        >>> Workers(rank=1, world_size=2).shard(torch.arange(6).view(6, 1)).flatten().tolist()
        [1, 3, 5]
    """

    rank: int = 0
    world_size: int = 1
    wrap: Callable[[nn.Module], nn.Module] | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank must lie in [0, world_size), got rank {self.rank} of {self.world_size}")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This worker's rows of a global batch."""
        return batch[self.rank :: self.world_size] if self.distributed else batch

    def prepare(self, module: nn.Module) -> nn.Module:
        """``module`` as this worker trains it: wrapped for data parallelism among several workers, else itself.

        Only what runs inside the module's ``forward`` is covered: the wrapper's backward averages the
        gradients of the parameters that ``forward`` used. Anything that needs the bare module (its
        ``state_dict``, evaluation, gradients taken with ``torch.autograd.grad``) keeps a reference to it.
        """
        if not self.distributed:
            return module
        return (self.wrap or DistributedDataParallel)(module)

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` summed over the workers, on their own device.

        Pass them on the training device: NCCL reduces CUDA tensors only, gloo CPU ones.
        """
        if not self.distributed:
            return values
        total = values.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` averaged over the workers, on their own device."""
        return self.sum(values) / self.world_size if self.distributed else values
