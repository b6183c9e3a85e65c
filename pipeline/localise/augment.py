"""Training crops for the localisation net, with the boxes moved along (paper 3.1 and A.1).

"Training of localisation ConvNets is similar to that of the classification ConvNets": the image
is isotropically rescaled to the (fixed) training scale S, a random crop-sized window is taken and
randomly flipped horizontally. The ground-truth boxes go through the same rescale, crop and flip;
the regression target is then the box in the crop's frame, ``(cx, cy, w, h)`` normalised by the
crop (values beyond [0, 1] when the object extends past the crop: the box is not clipped).

A net predicts one box per class (PCR) or one box (SCR), while an image may hold several objects:
the target of a class is its box with the largest area visible in the crop (ties: the one nearest
the crop's centre, then the first); SCR's single target is chosen the same way over all classes.
Boxes mostly outside the crop are no targets (``min_visible``, as OverFeat).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from pipeline.localise.boxes import GroundTruth, corners_to_cxcywh, crop_corners, flip_corners, scale_corners
from pipeline.preprocess import isotropic_resize, pil_to_tensor

__all__ = ["BoxCrop", "box_crop", "centre_crop", "choose_target", "targets", "visible_fraction"]


@dataclass
class BoxCrop:
    """A crop and its boxes: ``image`` uint8 3 x crop x crop; ``boxes`` K x 4 corners in the crop's frame."""

    image: torch.Tensor
    boxes: np.ndarray
    labels: np.ndarray


def _rescaled(img: Image.Image, gt: GroundTruth, s: int) -> tuple[Image.Image, np.ndarray]:
    w, h = img.size
    r = isotropic_resize(img, s)
    return r, scale_corners(gt.boxes, r.size[0] / w, r.size[1] / h)


def box_crop(img: Image.Image, gt: GroundTruth, s: int, crop: int, rng: np.random.Generator,
             flip: bool = True) -> BoxCrop:
    """Rescale to smallest side ``s``, take a random ``crop`` x ``crop`` window, flip with p = 0.5."""
    if s < crop:
        raise ValueError(f"training scale {s} is below the crop size {crop}")
    r, boxes = _rescaled(img, gt, s)
    left = int(rng.integers(0, r.size[0] - crop + 1))
    top = int(rng.integers(0, r.size[1] - crop + 1))
    x = pil_to_tensor(r)[:, top:top + crop, left:left + crop]
    boxes = crop_corners(boxes, left, top)
    if flip and rng.random() < 0.5:
        x = x.flip(-1)
        boxes = flip_corners(boxes, crop)
    return BoxCrop(x.contiguous(), boxes, gt.labels.copy())


def centre_crop(
    img: Image.Image, gt: GroundTruth | None, q: int, crop: int
) -> tuple[BoxCrop, tuple[float, float], tuple[int, int]]:
    """The central crop at test scale ``q`` (the first testing protocol of A.1).

    Returns:
        (the crop with its boxes, the (sx, sy) rescale factors, the crop's (left, top) in the
        rescaled image), so predictions can be mapped back to the original image.
    """
    if q < crop:
        raise ValueError(f"test scale {q} is below the crop size {crop}")
    w, h = img.size
    r = isotropic_resize(img, q)
    sx, sy = r.size[0] / w, r.size[1] / h
    left, top = (r.size[0] - crop) // 2, (r.size[1] - crop) // 2
    x = pil_to_tensor(r)[:, top:top + crop, left:left + crop]
    if gt is None:
        boxes, labels = np.zeros((0, 4)), np.zeros(0, dtype=np.int64)
    else:
        boxes, labels = crop_corners(scale_corners(gt.boxes, sx, sy), left, top), gt.labels.copy()
    return BoxCrop(x.contiguous(), boxes, labels), (sx, sy), (left, top)


def visible_fraction(boxes: np.ndarray, crop: int) -> np.ndarray:
    """Fraction of each box's area (K x 4 corners, crop frame) that lies inside the ``crop`` window."""
    x1 = np.clip(boxes[:, 0], 0, crop)
    y1 = np.clip(boxes[:, 1], 0, crop)
    x2 = np.clip(boxes[:, 2] + 1, 0, crop)
    y2 = np.clip(boxes[:, 3] + 1, 0, crop)
    visible = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    return visible / np.maximum(area, 1e-9)


def choose_target(boxes: np.ndarray, crop: int) -> int:
    """Index of the box with the largest area inside the ``crop`` window (ties: nearest the centre)."""
    x1 = np.clip(boxes[:, 0], 0, crop)
    y1 = np.clip(boxes[:, 1], 0, crop)
    x2 = np.clip(boxes[:, 2] + 1, 0, crop)
    y2 = np.clip(boxes[:, 3] + 1, 0, crop)
    visible = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    centre = (boxes[:, :2] + boxes[:, 2:] + 1) / 2 - crop / 2
    dist = np.hypot(centre[:, 0], centre[:, 1])
    order = np.lexsort((np.arange(len(boxes)), dist, -visible))
    return int(order[0])


def targets(bc: BoxCrop, crop: int, slots: int, min_visible: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Regression targets of one crop: (slots x 4 boxes normalised by the crop, slots mask).

    Args:
        bc: the crop and its boxes.
        crop: the crop size.
        slots: 1 for SCR (one target over all classes) or the class count for PCR (one target per
            class with a box in the crop).
        min_visible: a box is a target only if at least this fraction of its area lies inside the
            crop (OverFeat does not train on boxes overlapping the field of view by less than 50%).
    """
    t = np.zeros((slots, 4), dtype=np.float32)
    m = np.zeros(slots, dtype=np.float32)
    keep = np.flatnonzero(visible_fraction(bc.boxes, crop) >= max(min_visible, 1e-12)) if len(bc.boxes) else []
    if len(keep) == 0:
        return t, m
    boxes, labels = bc.boxes[keep], bc.labels[keep]
    norm = corners_to_cxcywh(boxes, crop, crop)
    if slots == 1:
        t[0] = norm[choose_target(boxes, crop)]
        m[0] = 1
        return t, m
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        t[c] = norm[idx[choose_target(boxes[idx], crop)]]
        m[c] = 1
    return t, m
