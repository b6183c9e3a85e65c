"""Validation during training: top-1 and top-5 on centre crops (paper 3.1's "validation accuracy").

The plateau schedule watches this number. Each validation image is read by exactly one rank
(:func:`pipeline.train.loader.val_loader`), counts are summed over ranks, so a distributed run
reports the same errors as one process: no padded duplicates, none missing.
"""

from __future__ import annotations

import torch

from pipeline.preprocess import Normalization, normalize
from pipeline.runtime import DistEnv, autocast
from pipeline.train.distributed import all_reduce_sum

__all__ = ["topk_correct", "validate"]


def topk_correct(scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[int]:
    """Images whose label is among the top-k scores, for each k (k capped at the class count)."""
    kmax = min(max(ks), scores.shape[1])
    top = scores.topk(kmax, dim=1).indices
    hit = top == labels[:, None]
    return [int(hit[:, : min(k, kmax)].any(dim=1).sum()) for k in ks]


@torch.no_grad()
def validate(model: torch.nn.Module, loader, env: DistEnv, norm: Normalization, *,
             bf16: bool, channels_last: bool) -> dict[str, float]:
    """Top-1/top-5 accuracy and error of ``model`` (unwrapped, not DDP) over all ranks' parts."""
    was_training = model.training
    model.eval()
    c1 = c5 = n = 0
    for x, y in loader:
        x = normalize(x.to(env.device, non_blocking=True), norm)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(env.device, bf16):
            scores = model(x).float()
        a, b = topk_correct(scores, y.to(env.device))
        c1, c5, n = c1 + a, c5 + b, n + len(y)
    c1, c5, n = all_reduce_sum([c1, c5, n], env)
    model.train(was_training)
    n = int(n)
    top1, top5 = (c1 / n, c5 / n) if n else (0.0, 0.0)
    return {"top1": top1, "top5": top5, "top1_err": 1 - top1, "top5_err": 1 - top5, "images": n}
