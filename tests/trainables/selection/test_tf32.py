"""The uniform order's float32 products round as IEEE float32 even after training has turned TF32 on.

Its lower bounds' margins assume IEEE float32 products (``trainables.selection.orderings``); a CUDA
float32 matrix product runs on TF32 tensor cores exactly when ``torch.backends.cuda.matmul.fp32_precision``
is ``tf32``, a process-wide setting a CPU build holds too. So the setting is recorded at every float32
matrix product the order issues, here on the CPU, after training's own call has turned TF32 on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from trainables.selection.orderings import reference_uniform_order, uniform_order
from trainables.speed import use_tf32_for_training

_MATRIX_PRODUCTS = {"matmul", "__matmul__", "__rmatmul__", "mm", "bmm", "addmm", "mv", "dot", "einsum", "linear"}


class _Float32Products(TorchFunctionMode):
    """For each float32 matrix product run inside: whether CUDA would have run it on TF32 tensor cores."""

    def __init__(self) -> None:
        super().__init__()
        self.on_tf32: list[bool] = []

    def __torch_function__(
        self, func: Callable[..., Any], types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        if getattr(func, "__name__", "") in _MATRIX_PRODUCTS and any(
            isinstance(arg, torch.Tensor) and arg.dtype == torch.float32 for arg in args
        ):
            self.on_tf32.append(torch.backends.cuda.matmul.fp32_precision == "tf32")
        return func(*args, **(kwargs or {}))


@pytest.fixture
def tf32_on_as_after_training() -> Iterator[None]:
    saved = torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision
    use_tf32_for_training("cuda")
    yield
    torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = saved


@pytest.mark.usefixtures("tf32_on_as_after_training")
def test_the_bounds_float32_products_run_without_tf32_and_training_keeps_its_setting() -> None:
    points = np.random.default_rng(0).normal(size=(600, 12))
    with _Float32Products() as products:
        # A small batch makes many passes, each with the bounds' float32 GEMM.
        order, _ = uniform_order(points, 200, batch=16, directions=4, device="cpu")
    assert len(products.on_tf32) >= 10
    assert not any(products.on_tf32)
    assert torch.backends.cuda.matmul.fp32_precision == torch.backends.cudnn.conv.fp32_precision == "tf32"
    np.testing.assert_array_equal(order, reference_uniform_order(points, 200)[0])
