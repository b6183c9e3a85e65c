"""Speed switches shared by the stages: native bf16, CPU cores and threads (paper 3.3 is about speed too).

bf16 autocast pays off only where the hardware has native bf16 (GPUs; CPUs with AVX512-BF16 or
AMX). On an AVX2-only CPU it is emulated and slower than float32, so ``auto`` settings use this.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["native_bf16", "cpu_count", "compute_threads"]


def cpu_count() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def compute_threads(loader_workers: int, ranks_here: int = 1) -> int:
    """torch CPU threads that leave a core to each loader worker and share the rest among the ranks.

    Oversubscribing the cores (compute threads + loader workers + other ranks) makes OpenMP's
    waiting threads spin against each other: several times slower on a busy two-core machine.
    """
    import torch

    return max(1, min(torch.get_num_threads(), cpu_count() // ranks_here - loader_workers))


def native_bf16(device: str | torch.device = "cpu") -> bool:
    """True if bf16 autocast is native (fast) on ``device``."""
    import torch  # here, not at import: the shard stage uses cpu_count without loading torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
