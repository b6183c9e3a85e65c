"""Crops for the localisation net with the boxes moved along (paper 3.1 and A.1), and the regression targets: per
class (SCR: over all), the box with the largest area inside the crop, ``(cx, cy, w, h)`` normalised by it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from pipeline.localise.boxes import GroundTruth, areas, corners_to_cxcywh, crop_corners, flip_corners, scale_corners
from pipeline.preprocess import isotropic_resize, pil_to_tensor

__all__ = ["BoxCrop", "box_crop", "centre_crop", "choose_target", "targets"]


@dataclass
class BoxCrop:
    """A crop and its boxes: ``image`` uint8 3 x crop x crop; ``boxes`` K x 4 corners in the crop's frame."""

    image: torch.Tensor
    boxes: np.ndarray
    labels: np.ndarray


def box_crop(img: Image.Image, gt: GroundTruth, s: int, crop: int, rng: np.random.Generator,
             flip: bool = True) -> BoxCrop:
    """Rescale to smallest side ``s``, take a random ``crop`` x ``crop`` window, flip with p = 0.5."""
    if s < crop:
        raise ValueError(f"training scale {s} is below the crop size {crop}")
    w, h = img.size
    r = isotropic_resize(img, s)
    boxes = scale_corners(gt.boxes, r.size[0] / w, r.size[1] / h)
    left = int(rng.integers(0, r.size[0] - crop + 1))
    top = int(rng.integers(0, r.size[1] - crop + 1))
    x = pil_to_tensor(r)[:, top:top + crop, left:left + crop]
    boxes = crop_corners(boxes, left, top)
    if flip and rng.random() < 0.5:
        x = x.flip(-1)
        boxes = flip_corners(boxes, crop)
    return BoxCrop(x.contiguous(), boxes, gt.labels.copy())


def centre_crop(img: Image.Image, gt: GroundTruth | None, q: int,
                crop: int) -> tuple[BoxCrop, tuple[float, float], tuple[int, int]]:
    """The central crop at test scale ``q`` (A.1's first testing protocol), the (sx, sy) rescale factors and the
    crop's (left, top) in the rescaled image."""
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


def _visible_area(boxes: np.ndarray, crop: int) -> np.ndarray:
    """Area of each box (K x 4 corners, crop frame) that lies inside the ``crop`` window."""
    inside = np.clip(boxes + np.array([0, 0, 1, 1]), 0, crop)
    return np.clip(inside[:, 2] - inside[:, 0], 0, None) * np.clip(inside[:, 3] - inside[:, 1], 0, None)


def choose_target(boxes: np.ndarray, crop: int) -> int:
    """Index of the box with the largest area inside the ``crop`` window (ties: nearest the centre)."""
    centre = (boxes[:, :2] + boxes[:, 2:] + 1) / 2 - crop / 2
    dist = np.hypot(centre[:, 0], centre[:, 1])
    return int(np.lexsort((np.arange(len(boxes)), dist, -_visible_area(boxes, crop)))[0])


def targets(bc: BoxCrop, crop: int, slots: int, min_visible: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Regression targets of one crop, (slots x 4 boxes, slots mask): 1 slot (SCR) or one per class (PCR); a box is
    a target only if at least ``min_visible`` of its area lies inside the crop (OverFeat)."""
    t = np.zeros((slots, 4), dtype=np.float32)
    m = np.zeros(slots, dtype=np.float32)
    keep = np.flatnonzero(_visible_area(bc.boxes, crop) / np.maximum(areas(bc.boxes), 1e-9) >= max(min_visible, 1e-12))
    boxes, slot = bc.boxes[keep], bc.labels[keep] if slots > 1 else np.zeros(len(keep), dtype=np.int64)
    norm = corners_to_cxcywh(boxes, crop, crop)
    for c in np.unique(slot):
        idx = np.flatnonzero(slot == c)
        t[c] = norm[idx[choose_target(boxes[idx], crop)]]
        m[c] = 1
    return t, m
