"""The speed settings: TF32 off where exactness needs it, autocast by precision, fused AdamW on CUDA only.

The TF32 settings are process-wide and a CPU build of torch holds them too, so what each function does
to them is checked here without a GPU: a CUDA float32 matrix product runs on TF32 tensor cores exactly
when ``torch.backends.cuda.matmul.fp32_precision`` is ``tf32`` (what cuBLAS reads; cuDNN reads
``torch.backends.cudnn.conv.fp32_precision``).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from unittest import mock

import pytest
import torch

from trainables import speed
from trainables.speed import autocast, fused_adamw, strict_float32, use_tf32_for_training


@pytest.fixture(autouse=True)
def _tf32_flags_put_back() -> Iterator[None]:
    # The tests set the process-wide flags, which the rest of the session must not inherit.
    saved = _precisions()
    yield
    _set_precisions(saved)


def _precisions() -> tuple[str, str]:
    return torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision


def _set_precisions(precisions: tuple[str, str]) -> None:
    torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = precisions


def _tf32_in_force() -> tuple[bool, bool]:
    """Whether CUDA float32 matrix products and convolutions would run on TF32 tensor cores."""
    return torch.backends.cuda.matmul.fp32_precision == "tf32", torch.backends.cudnn.conv.fp32_precision == "tf32"


@pytest.mark.parametrize("before", [True, False])
def test_strict_float32_turns_tf32_off_inside_and_puts_the_setting_back(before: bool) -> None:
    _set_precisions(("tf32", "tf32") if before else ("ieee", "ieee"))
    assert _tf32_in_force() == (before, before)
    with strict_float32():
        assert _tf32_in_force() == (False, False)
    assert _tf32_in_force() == (before, before)


def test_strict_float32_leaves_the_matmul_precision_a_user_chose() -> None:
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        with strict_float32():
            assert not any(_tf32_in_force())
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(before)


def test_strict_float32_puts_the_setting_back_when_the_block_fails() -> None:
    use_tf32_for_training("cuda")
    with pytest.raises(RuntimeError, match="inside"), strict_float32():
        raise RuntimeError("inside")
    assert _tf32_in_force() == (True, True)


def test_training_turns_tf32_on_for_cuda_only_and_the_module_flag_turns_it_off() -> None:
    _set_precisions(("ieee", "ieee"))
    use_tf32_for_training("cpu")
    assert _tf32_in_force() == (False, False)
    use_tf32_for_training("cuda")
    assert _tf32_in_force() == (True, True)
    with mock.patch.object(speed, "TF32", False):
        use_tf32_for_training("cuda:0")
    assert _tf32_in_force() == (False, False)


def test_fp32_needs_no_autocast() -> None:
    context = autocast("cpu", "fp32")
    assert isinstance(context, contextlib.nullcontext)
    a = torch.randn(4, 8)
    with context:
        assert (a @ a.T).dtype == torch.float32


def test_bf16_autocast_runs_matrix_products_in_bfloat16_on_cpu() -> None:
    layer = torch.nn.Linear(8, 4)
    x = torch.randn(3, 8)
    with autocast("cpu", "bf16"):
        out = layer(x)
        product = x @ x.T
    assert out.dtype == product.dtype == torch.bfloat16
    assert layer.weight.dtype == torch.float32  # the weights stay in float32
    assert (x @ x.T).dtype == torch.float32  # and the setting ends with the block


@pytest.mark.parametrize("precision", ["fp16", "bfloat16", ""])
def test_an_unknown_precision_is_refused_by_name(precision: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(precision))):
        autocast("cpu", precision)


def test_fused_adamw_on_cuda_only_unless_turned_off() -> None:
    assert not fused_adamw("cpu")
    assert fused_adamw("cuda")
    with mock.patch.object(speed, "FUSED_ADAMW", False):
        assert not fused_adamw("cuda")
