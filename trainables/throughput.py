"""Training throughput: tokens per second and model FLOPs utilisation (MFU) against a device's peak.

MFU is the model's FLOPs per trained position (``trainables.model.flops_per_token``) times the positions
trained per second, over the peak dense FLOP/s of the devices that trained them. The peaks come from
the makers' data sheets for the arithmetic a trial runs in: bf16 tensor cores under ``precision: bf16``,
TF32 tensor cores for fp32 on CUDA (effsweep turns TF32 on for training). A device not in the table, or
a CPU, has no peak and no MFU: a made-up peak would give a number that compares with nothing.
See docs/benchmarks.md.
"""

from __future__ import annotations

import torch

# Dense (not 2:4 sparse) peak FLOP/s per GPU by arithmetic. Matched against the CUDA device name in
# this order, so that the more specific names ("H100 PCIe", "L40S") come before their prefixes.
PEAK_FLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("H100 PCIe", {"bf16": 756e12, "tf32": 378e12}),
    ("H100", {"bf16": 989e12, "tf32": 495e12}),
    ("H200", {"bf16": 989e12, "tf32": 495e12}),  # GH200 too
    ("A100", {"bf16": 312e12, "tf32": 156e12}),
    ("L40S", {"bf16": 362e12, "tf32": 183e12}),
    ("L40", {"bf16": 181e12, "tf32": 90e12}),
    ("L4", {"bf16": 121e12, "tf32": 60e12}),
)


def device_name(device: str | torch.device) -> str:
    """The device's name as its maker gives it ("NVIDIA H200"), or ``cpu``."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


def peak_flops(device: str | torch.device, precision: str) -> float | None:
    """Peak dense FLOP/s of one ``device`` training in ``precision`` (``fp32`` or ``bf16``); None when unknown.

    Example:
        >>> peak_flops("cpu", "bf16") is None
        True
    """
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")
    name = device_name(device)
    if name == "cpu":
        return None
    arithmetic = "bf16" if precision == "bf16" else "tf32"
    for key, peaks in PEAK_FLOPS:
        if key in name:
            return peaks[arithmetic]
    return None
