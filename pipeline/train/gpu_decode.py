"""JPEG decoding on the training GPU (``data.decode=gpu``): each micro-batch of plain JPEGs decoded in one nvJPEG
call and cropped on the device with its worker-drawn crop plan (docs/training.md)."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.errors import UserError
from pipeline.transforms import RawCrop, apply_plan, jpeg_to_tensor

__all__ = ["collate_raw", "finish_on_device"]


def collate_raw(items: list[tuple]) -> tuple[list[torch.Tensor | RawCrop], torch.Tensor, torch.Tensor]:
    """A micro-batch whose crops are uint8 tensors or :class:`RawCrop` s left for the device."""
    xs, ys, offs = zip(*items, strict=False)
    return list(xs), torch.tensor(ys, dtype=torch.int64), torch.from_numpy(np.stack(offs))


def finish_on_device(batch: tuple, *, crop: int, device: str) -> tuple[torch.Tensor, ...]:
    """(crops or raw JPEGs, labels, offsets) -> (uint8 N x 3 x crop x crop on ``device``, labels, offsets): the raw
    JPEGs decoded in one ``decode_jpeg`` call on ``device`` (nvJPEG on CUDA; the CPU decoder in tests), then cropped."""
    xs, ys, offs = batch
    out = torch.empty((len(xs), 3, crop, crop), dtype=torch.uint8, device=device)
    raw = [i for i, x in enumerate(xs) if isinstance(x, RawCrop)]
    done = [i for i, x in enumerate(xs) if not isinstance(x, RawCrop)]
    if raw:
        try:
            decoded = jpeg_to_tensor([xs[i].data for i in raw], device=device)
        except RuntimeError as e:
            raise UserError(f"GPU JPEG decoding failed ({str(e).splitlines()[0]}); use data.decode=cpu") from None
        for i, x in zip(raw, decoded, strict=True):
            out[i] = apply_plan(x, xs[i].plan, crop)
    if done:
        out[done] = torch.stack([xs[i] for i in done]).to(device, non_blocking=True)
    return out, ys, offs
