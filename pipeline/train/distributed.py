"""Synchronous data parallelism (paper 3.3) with torch.distributed: NCCL on GPUs, gloo on CPUs.

"Multi-GPU training exploits data parallelism, and is carried out by splitting each batch of
training images into several GPU batches, processed in parallel on each GPU. After the GPU batch
gradients are computed, they are averaged to obtain the gradient of the full batch." DDP does
exactly this, so a run on N ranks equals one device with the whole batch.

Ranks come from the environment ``torchrun`` sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT), on one or many nodes; without it the run is a single process. Joining and leaving
the group is :func:`pipeline.runtime.start_distributed` / :func:`~pipeline.runtime.stop_distributed`;
this module holds the few collectives training needs, among them the per-step vote on stopping
(:class:`StopVote`: SIGTERM / SIGINT reach the ranks at different moments, and all must stop after
the same step).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from pipeline.runtime import DistEnv

__all__ = ["all_reduce_sum", "broadcast_error", "StopVote"]


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


class StopVote:
    """The ranks' agreement, after every SGD step, on whether to stop: the largest signal number any rank received.

    One all-reduce (max) of a single int on the CPU: on the gloo group itself, or on a gloo group made for it
    beside NCCL, so the vote never waits for the GPU (the host keeps queueing work ahead of it). Create it on
    every rank at the same point (making the gloo group is collective).
    """

    def __init__(self, env: DistEnv) -> None:
        self.world = env.world
        self.group = dist.new_group(backend="gloo") if env.world > 1 and env.backend != "gloo" else None
        self._flag = torch.zeros(1, dtype=torch.int32)

    def agree(self, signum: int | None) -> int | None:
        """The signal to stop on (the same on every rank), or None to go on."""
        if self.world == 1:
            return signum
        self._flag[0] = signum or 0
        dist.all_reduce(self._flag, op=dist.ReduceOp.MAX, group=self.group)
        return int(self._flag[0]) or None
