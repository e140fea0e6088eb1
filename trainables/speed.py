"""The speed settings of a trial: mixed precision, TF32, fused optimizers, compilation and host-to-device copies.

``train.precision: bf16`` runs the forward and the loss under ``torch.autocast`` in bfloat16 (on CUDA
and on CPU), with the weights, gradients and optimizer state in float32, as nanoGPT and Ray Train's
recipes do; ``fp32`` runs as effsweep always has. On CUDA, float32 matrix products of training use
TF32 tensor cores (``TF32``) and AdamW its fused kernel (``FUSED_ADAMW``); the benchmark that compares
them (``benchmarks/gpu.py``) turns them off. See docs/benchmarks.md.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

PRECISIONS = ("fp32", "bf16")
# Training on CUDA uses TF32 for float32 matrix products, and AdamW's fused kernel.
TF32 = True
FUSED_ADAMW = True


def on_cuda(device: str | torch.device) -> bool:
    return torch.device(device).type == "cuda"


def use_tf32_for_training(device: str | torch.device) -> None:
    """Let float32 matrix products of training on CUDA run on TF32 tensor cores (``TF32``).

    Code whose exactness rests on float32 products (the uniform order's bounds) turns it off for itself
    (``strict_float32``).
    """
    if on_cuda(device):
        torch.backends.cuda.matmul.allow_tf32 = TF32
        torch.backends.cudnn.allow_tf32 = TF32


@contextlib.contextmanager
def strict_float32() -> Iterator[None]:
    """Float32 matrix products in full float32 inside the block, whatever TF32 setting is in force."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def autocast(device: str | torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context of a forward pass in ``precision``; fp32 needs none."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def fused_adamw(device: str | torch.device) -> bool:
    """Whether AdamW should use its fused kernel: on CUDA, unless ``FUSED_ADAMW`` is off."""
    return FUSED_ADAMW and on_cuda(device)


def to_device(batch: torch.Tensor, device: str | torch.device) -> torch.Tensor:
    """``batch`` on ``device``; to a GPU through pinned memory, without waiting for the copy."""
    if not on_cuda(device):
        return batch.to(device)
    return batch.pin_memory().to(device, non_blocking=True)


def compiled(module: nn.Module, enabled: bool) -> nn.Module:
    """``module`` compiled with ``torch.compile`` when ``enabled``; compilation happens at its first call."""
    return torch.compile(module) if enabled else module
