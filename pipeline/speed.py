"""Speed switches shared by the stages: where bf16 autocast is native (paper 3.3 is about speed too).

bf16 autocast pays off only where the hardware has native bf16 (GPUs; CPUs with AVX512-BF16 or
AMX). On an AVX2-only CPU it is emulated and slower than float32, so ``auto`` settings use this.
"""

from __future__ import annotations

import torch

__all__ = ["native_bf16"]


def native_bf16(device: str | torch.device = "cpu") -> bool:
    """True if bf16 autocast is native (fast) on ``device``."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
