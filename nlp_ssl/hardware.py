"""What the device offers the training loop: its peak FLOP/s (for MFU) and the fastest AdamW
implementation it runs. Measured figures behind these choices: docs/benchmarks.md."""

from __future__ import annotations

import torch

# dense bf16 tensor-core peaks from the vendors' data sheets, matched in this order by
# substring of the device name: A100 must come before A10, which it contains
GPU_PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}
UNKNOWN_GPU_PEAK_FLOPS = 100e12
CPU_PEAK_FLOPS = 2.5e11
"""fp32 matmul peak measured on the 2-core development machine; set ``train.peak_flops`` on
other CPUs."""


def default_peak_flops(device: torch.device) -> float:
    """Peak FLOP/s of one ``device``, the denominator of MFU when ``train.peak_flops`` is unset."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, value in GPU_PEAK_FLOPS.items():
            if key in name:
                return value
        return UNKNOWN_GPU_PEAK_FLOPS
    return CPU_PEAK_FLOPS


def fast_adamw_kwargs(device: torch.device) -> dict:
    """``torch.optim.AdamW`` options for ``device``.

    ``fused`` updates every parameter in one kernel (CUDA, and CPU since torch 2.4), much
    faster than ``foreach`` for the small models trained here; other devices get ``foreach``.
    """
    return {"fused": True} if device.type in ("cuda", "cpu") else {"foreach": True}
