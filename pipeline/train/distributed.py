"""Synchronous data parallelism (paper 3.3) with torch.distributed: NCCL on GPUs, gloo on CPUs.

"Multi-GPU training exploits data parallelism, and is carried out by splitting each batch of
training images into several GPU batches, processed in parallel on each GPU. After the GPU batch
gradients are computed, they are averaged to obtain the gradient of the full batch." DDP does
exactly this, so a run on N ranks equals one device with the whole batch.

Ranks come from the environment ``torchrun`` sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT), on one or many nodes; without it the run is a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from pipeline.errors import UserError

__all__ = ["DistEnv", "init_distributed", "shutdown", "all_reduce_sum", "broadcast_error"]


@dataclass
class DistEnv:
    """This process's place in the run."""

    rank: int
    world: int
    local_rank: int
    device: torch.device
    backend: str | None  # None: single process
    owns_group: bool  # this module initialised the process group (and tears it down)

    @property
    def main(self) -> bool:
        """Rank 0 writes checkpoints, metrics and the progress bar."""
        return self.rank == 0


def _device(pref: str, local_rank: int) -> torch.device:
    if pref == "cuda" or (pref == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UserError("speed.device=cuda but CUDA is not available")
        n = torch.cuda.device_count()
        return torch.device("cuda", local_rank % n)
    return torch.device("cpu")


def init_distributed(device: str = "auto") -> DistEnv:
    """Join the process group that torchrun describes (if any) and pick this rank's device.

    Args:
        device: "auto", "cpu" or "cuda" (SpeedConfig.device).
    Returns:
        The rank, world size and device; ``backend`` is None for a single process.
    """
    if dist.is_available() and dist.is_initialized():  # a caller set it up (tests, notebooks)
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", rank))
        dev = _device(device, local)
        return DistEnv(rank, world, local, dev, dist.get_backend(), owns_group=False)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _device(device, local)
    if world <= 1:
        return DistEnv(0, 1, 0, dev, None, owns_group=False)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group(backend=backend, rank=rank, world_size=world,
                            device_id=dev if dev.type == "cuda" else None)
    return DistEnv(rank, world, local, dev, backend, owns_group=True)


def shutdown(env: DistEnv) -> None:
    """Leave the process group if this module created it."""
    if env.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: list[float], env: DistEnv) -> list[float]:
    """Sum a few numbers over ranks (exact for counts below 2^53)."""
    if env.world == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=env.device if env.backend == "nccl" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().tolist()


def broadcast_error(message: str | None, env: DistEnv) -> str | None:
    """Share one rank's error message with all ranks, so every rank stops before a training step."""
    if env.world == 1:
        return message
    msgs: list[str | None] = [None] * env.world
    dist.all_gather_object(msgs, message)
    return next((m for m in msgs if m), None)
