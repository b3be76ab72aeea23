"""Which number format the model computes in."""

from __future__ import annotations

import contextlib

import torch


def autocast_context(device: torch.device, precision: str):
    """bf16/fp16 autocast on GPU; a no-op for fp32 or on CPU."""
    if precision == "fp32" or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
