"""The image descriptor of paper Appendix B: multi-scale, flip-averaged penultimate (FC7 after ReLU) activations,
globally average-pooled, of the dense net; region descriptors (Table 12) the same on box crops. Aggregation,
fusion and L2 happen when the store is read (docs/features.md, "The descriptor").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from pipeline.errors import UserError
from pipeline.models.vgg import VGG
from pipeline.preprocess import Normalization, isotropic_resize, normalize, pil_to_tensor
from pipeline.runtime import autocast

__all__ = [
    "PAPER_SCALES", "VOC_SCALES", "SCALE_PRESETS", "descriptor_scales", "Net", "ScaleGroup",
    "prepare_images", "describe", "region_descriptors", "image_descriptor", "box_crops",
]

#: Appendix B: Q in {256, 384, 512} (Caltech, and the default).
PAPER_SCALES = (256, 384, 512)
#: Appendix B, VOC: "aggregated image descriptors over a wide range of scales".
VOC_SCALES = (256, 384, 512, 640, 768)
SCALE_PRESETS: dict[str, tuple[int, ...]] = {"paper": PAPER_SCALES, "voc": VOC_SCALES}
#: ``relative`` scales are given for the paper's smallest test scale 256 and multiplied by crop/256.
RELATIVE_BASE = 256


def descriptor_scales(scales: str | Sequence[int], crop: int, relative: bool = False) -> list[int]:
    """The test scales Q, in the order given (duplicates removed): a preset (``paper``, ``voc``) or smallest sides.

    ``relative`` multiplies them by ``crop / 256`` (a crop-32 net: paper -> 32, 48, 64), ``crop`` being
    the largest crop of the nets used. Raises UserError for an unknown preset, no scales, or a scale
    below the crop size.
    """
    if isinstance(scales, str) and scales not in SCALE_PRESETS:
        raise UserError(f"unknown scale preset {scales!r} (one of {', '.join(SCALE_PRESETS)}, or a list of sizes)")
    base = SCALE_PRESETS[scales] if isinstance(scales, str) else list(scales)
    if not base:
        raise UserError("no test scales given")
    out = list(dict.fromkeys(int(round(q * crop / RELATIVE_BASE)) if relative else int(q) for q in base))
    low = [q for q in out if q < crop]
    if low:
        raise UserError(f"test scale(s) {low} below the crop size {crop}: the dense net needs a smallest side "
                        f">= {crop} (use larger scales, or --relative for small-crop nets)")
    return out


@dataclass
class Net:
    """A net used for extraction with its checkpoint's input normalisation."""

    model: VGG
    norm: Normalization

    @property
    def crop(self) -> int:
        return self.model.cfg.crop

    @property
    def dim(self) -> int:
        """Descriptor dimension: the penultimate (FC7) width."""
        return self.model.cfg.fc_width

    def to(self, device: torch.device, channels_last: bool = False) -> Net:
        self.model = self.model.to(device).eval()
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        return self


@dataclass
class ScaleGroup:
    """Images of one batch that share a resized size at one scale, as a uint8 tensor."""

    index: np.ndarray  # positions of the images in the batch
    pixels: torch.Tensor  # uint8, g x 3 x H x W


def box_crops(image: Image.Image, boxes: Sequence[dict[str, Any]]) -> list[Image.Image]:
    """Crops of ``image`` for boxes ``{xmin, ymin, xmax, ymax}`` (pixels, as the readers give them: VOC's
    1-based corners shift a crop by at most a pixel), clamped to the image, floor/ceiling, at least 1 px."""
    w, h = image.size
    out = []
    for b in boxes:
        x0 = min(max(int(math.floor(float(b["xmin"]))), 0), w - 1)
        y0 = min(max(int(math.floor(float(b["ymin"]))), 0), h - 1)
        x1 = max(min(int(math.ceil(float(b["xmax"]))), w), x0 + 1)
        y1 = max(min(int(math.ceil(float(b["ymax"]))), h), y0 + 1)
        out.append(image.crop((x0, y0, x1, y1)))
    return out


def prepare_images(images: Sequence[Image.Image], scales: Sequence[int], flip: bool = True,
                   max_pixels: int = 1 << 22) -> dict[int, list[ScaleGroup]]:
    """``{Q: [ScaleGroup, ...]}``: every RGB image rescaled to each Q (smallest side), equal sizes grouped.

    A group holds at most ``max_pixels`` input pixels per forward pass (twice the images' with
    ``flip``); groups come in first-occurrence order of sizes (deterministic).
    """
    out: dict[int, list[ScaleGroup]] = {}
    for q in scales:
        resized = [isotropic_resize(im, q) for im in images]
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(resized):
            by_size.setdefault(im.size, []).append(i)
        groups = []
        for (w, h), idx in by_size.items():
            step = max(1, max_pixels // ((2 if flip else 1) * w * h))
            for s in range(0, len(idx), step):
                part = idx[s:s + step]
                groups.append(ScaleGroup(np.asarray(part, dtype=np.int64),
                                         torch.stack([pil_to_tensor(resized[i]) for i in part])))
        out[q] = groups
    return out


def describe(net: Net, prepared: dict[int, list[ScaleGroup]], n: int, *, flip: bool = True,
             device: torch.device | str = "cpu", bf16: bool = False, channels_last: bool = False) -> np.ndarray:
    """Raw per-scale descriptors (float32, n x S x D) of the ``n`` images :func:`prepare_images` prepared.

    ``net`` is already on ``device``; ``flip`` averages with the flipped image's descriptor;
    ``bf16`` autocasts (~1e-2 relative error); ``channels_last`` is NHWC.
    """
    device = torch.device(device)
    scales = list(prepared)
    out = np.zeros((n, len(scales), net.dim), dtype=np.float32)
    for si, q in enumerate(scales):
        for g in prepared[q]:
            x = normalize(g.pixels.to(device), net.norm)
            if flip:
                x = torch.cat([x, x.flip(-1)])
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode(), autocast(device, bf16):
                fmap = net.model.forward_features(x, dense=True)
            pooled = fmap.float().mean(dim=(2, 3))  # global average pooling
            if flip:
                k = len(g.index)
                pooled = (pooled[:k] + pooled[k:]) / 2
            out[g.index, si] = pooled.cpu().numpy()
    return out


def region_descriptors(whole: np.ndarray, crops: np.ndarray, owners: np.ndarray) -> np.ndarray:
    """Per image, the mean descriptor of its box ``crops`` (``owners``: crop -> image); no boxes: ``whole``."""
    out = whole.copy()
    if len(owners):
        sums = np.zeros_like(whole)
        np.add.at(sums, owners, crops)
        counts = np.bincount(owners, minlength=len(whole))
        has = counts > 0
        out[has] = sums[has] / counts[has][:, None, None]
    return out


def image_descriptor(model: VGG, image: Image.Image, scales: Sequence[int] = PAPER_SCALES,
                     norm: Normalization | None = None, flip: bool = True) -> np.ndarray:
    """The raw per-scale descriptors (S x D) of one image: a convenience for notebooks and tests."""
    net = Net(model.eval(), norm or Normalization())
    return describe(net, prepare_images([image], scales, flip), 1, flip=flip)[0]
