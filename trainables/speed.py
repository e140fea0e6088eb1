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
    """Let float32 matrix products and convolutions of training on CUDA run on TF32 tensor cores (``TF32``).

    Code whose exactness rests on float32 products (the uniform order's bounds) turns it off for itself
    (``strict_float32``).
    """
    if on_cuda(device):
        precision = "tf32" if TF32 else "ieee"
        torch.backends.cuda.matmul.fp32_precision = precision
        torch.backends.cudnn.conv.fp32_precision = precision


@contextlib.contextmanager
def strict_float32() -> Iterator[None]:
    """Float32 matrix products in full float32 inside the block, whatever TF32 setting is in force."""
    # The per-backend settings are what cuBLAS, cuDNN and oneDNN read. Unlike ``allow_tf32`` they can be read
    # whichever API set them (torch refuses to read ``allow_tf32`` after ``fp32_precision = "tf32"``), and
    # putting them back leaves ``torch.set_float32_matmul_precision("medium")`` as it was.
    backends = (torch.backends.cuda.matmul, torch.backends.cudnn.conv, torch.backends.mkldnn.matmul)
    saved = [backend.fp32_precision for backend in backends]
    for backend in backends:
        backend.fp32_precision = "ieee"
    try:
        yield
    finally:
        for backend, precision in zip(backends, saved, strict=True):
            backend.fp32_precision = precision


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
