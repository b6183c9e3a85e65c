"""Synchronous data parallelism (paper 3.3) with torch.distributed: the sums, the shared error and the per-step
vote on stopping that training needs besides DDP (joining the group: :func:`pipeline.runtime.start_distributed`)."""

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
    """The ranks' agreement, after every SGD step, on whether to stop: the largest signal number any rank received,
    by one all-reduce on a gloo group, so the vote never waits for the GPU. Create it on every rank at the same point
    (making the gloo group is collective)."""

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
