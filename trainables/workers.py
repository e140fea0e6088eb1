"""Data-parallel training: one global batch split by rows across workers, gradients averaged.

Every worker draws the same global batch (the batcher is seeded alike) and
trains on its rows, ``rank::world_size``; at the end of every backward, its
gradients are averaged over the workers in one all-reduce, so every worker takes
the step one worker would take on the whole batch, whatever path the loss
takes through the model (``patch_loss`` reaches past ``forward``, which a
``DistributedDataParallel`` wrapper would not see). Losses and evaluation
sums are reduced the same way, so a trial reports the same numbers on any
number of workers, up to the order of floating-point sums.

Step rules that choose their own rate from the loss would choose differently
on each worker's rows: they run on one worker only (``single_worker_only``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Workers:
    """This process's place among the trial's workers (rank 0 of 1 when training alone).

    Example:
        >>> Workers(rank=1, world_size=2).shard(torch.arange(6).view(6, 1)).flatten().tolist()
        [1, 3, 5]
    """

    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank must lie in [0, world_size), got rank {self.rank} of {self.world_size}")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This worker's rows of a global batch."""
        return batch[self.rank :: self.world_size] if self.distributed else batch

    def average_gradients(self, model: nn.Module) -> None:
        """From now on, every backward leaves each gradient averaged over the workers."""
        if self.distributed:
            _GradientAverager(model, self.world_size)

    def sum(self, *values: float) -> list[float]:
        """Each value summed over the workers."""
        if not self.distributed:
            return list(values)
        totals = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(totals, op=dist.ReduceOp.SUM)
        return totals.tolist()

    def mean(self, value: float) -> float:
        return self.sum(value)[0] / self.world_size


class _GradientAverager:
    """At the end of every backward, one all-reduce of all the gradients it produced, flattened together.

    The first gradient a backward accumulates queues the averaging as a
    callback of autograd's engine, which runs once that backward is done (as
    DistributedDataParallel finalises its buckets). An all-reduce per
    gradient instead costs about as much as the step itself on two CPU
    workers. Averaging what ``.grad`` holds is linear, so a second backward
    before the step (its gradients added to ones already averaged, the same
    on every worker) still leaves the average of the sums. Every worker must
    reach the same parameters in its backward, as they do here: the same
    model and loss on rows of the same batch.
    """

    def __init__(self, model: nn.Module, world_size: int) -> None:
        self._params = [param for param in model.parameters() if param.requires_grad]
        self._world_size = world_size
        self._queued_for: int | None = None  # the backward (autograd graph task) already queued
        for param in self._params:
            param.register_post_accumulate_grad_hook(self._queue)

    def _queue(self, _param: torch.Tensor) -> None:
        # By the graph task's id rather than a flag, which a backward that raised would leave set.
        task = torch._C._current_graph_task_id()
        if task != self._queued_for:
            self._queued_for = task
            torch.autograd.Variable._execution_engine.queue_callback(self._average)

    def _average(self) -> None:
        grads = [param.grad for param in self._params if param.grad is not None]
        flat = torch.cat([grad.reshape(-1) for grad in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(self._world_size)
        for grad, averaged in zip(grads, flat.split([grad.numel() for grad in grads]), strict=True):
            grad.copy_(averaged.view_as(grad))
