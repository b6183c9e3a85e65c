"""Bounding boxes for localisation (paper Appendix A): inclusive corners, the paper's (cx, cy, w, h), IoU, ground
truth and the ILSVRC error of one image; the rules: docs/formats.md sections 4.1-4.6.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "overlaps", "areas", "iou", "iou_matrix", "corners_to_cxcywh", "cxcywh_to_corners", "clip_corners",
    "GroundTruth", "ground_truth", "whole_image_box", "centre_quarter_box", "scale_corners", "crop_corners",
    "flip_corners", "IOU_THRESHOLD", "image_localisation_error", "image_classification_error",
]

#: The ILSVRC criterion: a box counts when its IoU with a ground-truth box is at least this.
IOU_THRESHOLD = 0.5


def overlaps(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inclusive width and height of the intersection of every box in ``a`` (N x 4) with every box in ``b`` (M x 4)."""
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + 1
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + 1
    return iw, ih


def areas(c: np.ndarray) -> np.ndarray:
    """Areas of corner boxes (K x 4) with inclusive widths."""
    return (c[:, 2] - c[:, 0] + 1) * (c[:, 3] - c[:, 1] + 1)


def iou_matrix(a: np.ndarray | Sequence, b: np.ndarray | Sequence) -> np.ndarray:
    """IoU of every box in ``a`` (N x 4 corners) with every box in ``b`` (M x 4); -1 without intersection (devkit)."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1, 4), np.asarray(b, dtype=np.float64).reshape(-1, 4)
    iw, ih = overlaps(a, b)
    inter = iw * ih
    out = np.full(inter.shape, -1.0)
    np.divide(inter, areas(a)[:, None] + areas(b)[None, :] - inter, out=out, where=(iw > 0) & (ih > 0))
    return out


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two corner boxes (inclusive widths; -1 when they do not intersect)."""
    return float(iou_matrix(a, b)[0, 0])


def corners_to_cxcywh(corners: np.ndarray, width: float, height: float) -> np.ndarray:
    """Inclusive pixel corners (... x 4) -> (cx, cy, w, h) normalised by a ``width x height`` frame."""
    c = np.asarray(corners, dtype=np.float64)
    x1, y1, x2, y2 = c[..., 0], c[..., 1], c[..., 2] + 1, c[..., 3] + 1
    return np.stack([(x1 + x2) / (2 * width), (y1 + y2) / (2 * height),
                     (x2 - x1) / width, (y2 - y1) / height], axis=-1)


def cxcywh_to_corners(boxes: np.ndarray, width: float, height: float) -> np.ndarray:
    """(cx, cy, w, h) normalised by a ``width x height`` frame (... x 4) -> inclusive pixel corners; a negative
    width or height is taken as zero, giving a one-pixel box (never ``min > max``)."""
    b = np.asarray(boxes, dtype=np.float64)
    w = np.maximum(b[..., 2], 0) * width
    h = np.maximum(b[..., 3], 0) * height
    cx, cy = b[..., 0] * width, b[..., 1] * height
    x1, y1 = cx - w / 2, cy - h / 2
    x2, y2 = np.maximum(cx + w / 2 - 1, x1), np.maximum(cy + h / 2 - 1, y1)
    return np.stack([x1, y1, x2, y2], axis=-1)


def clip_corners(corners: np.ndarray, width: int, height: int) -> np.ndarray:
    """Clip corner boxes to the pixels of a ``width x height`` image (0..width-1, 0..height-1)."""
    c = np.array(corners, dtype=np.float64, copy=True)
    c[..., 0::2] = np.clip(c[..., 0::2], 0, width - 1)
    c[..., 1::2] = np.clip(c[..., 1::2], 0, height - 1)
    return c


def scale_corners(corners: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """Corners after resizing the image by ``sx`` x ``sy`` (continuous edges scale; widths stay inclusive)."""
    c = np.asarray(corners, dtype=np.float64)
    return np.stack([c[..., 0] * sx, c[..., 1] * sy, (c[..., 2] + 1) * sx - 1, (c[..., 3] + 1) * sy - 1], axis=-1)


def crop_corners(corners: np.ndarray, left: float, top: float) -> np.ndarray:
    """Corners in the frame of a crop whose top-left pixel is (left, top) (not clipped)."""
    c = np.asarray(corners, dtype=np.float64)
    return c - np.array([left, top, left, top])


def flip_corners(corners: np.ndarray, width: int) -> np.ndarray:
    """Corners after a horizontal flip of a ``width``-pixel-wide image (pixel x -> width-1-x)."""
    c = np.asarray(corners, dtype=np.float64)
    return np.stack([width - 1 - c[..., 2], c[..., 1], width - 1 - c[..., 0], c[..., 3]], axis=-1)


def whole_image_box(width: int, height: int) -> np.ndarray:
    """The baseline box covering the whole image."""
    return np.array([0.0, 0.0, width - 1.0, height - 1.0])


def centre_quarter_box(width: int, height: int) -> np.ndarray:
    """The baseline box of half the width and half the height (a quarter of the area), centred."""
    return cxcywh_to_corners(np.array([0.5, 0.5, 0.5, 0.5]), width, height)


@dataclass
class GroundTruth:
    """The usable ground-truth boxes of one image (frame of the decoded image)."""

    boxes: np.ndarray  #: K x 4 inclusive corners, clipped to the image
    labels: np.ndarray  #: K class indices
    difficult: np.ndarray | None = None  #: K flags (VOC ``<difficult>``; ILSVRC boxes have none)
    clipped: int = 0  #: boxes clipped to the image
    skipped: list[str] = field(default_factory=list)  #: one reason per box left out

    def __post_init__(self) -> None:
        if self.difficult is None:
            self.difficult = np.zeros(len(self.labels), dtype=bool)

    @property
    def classes(self) -> list[int]:
        """The ground-truth classes, ascending: those with a usable box not *difficult* (docs/formats.md 4.3)."""
        return sorted({int(x) for x, d in zip(self.labels, self.difficult, strict=False) if not d})

    def of_class(self, c: int) -> np.ndarray:
        """The boxes of class ``c`` (K_c x 4)."""
        return self.boxes[self.labels == c]


def _box_label(box: dict[str, Any], classes: Sequence[str], label: int | None) -> int | None:
    if isinstance(box.get("label"), int) and 0 <= box["label"] < len(classes):
        return int(box["label"])
    name = box.get("name")
    if name in classes:
        return list(classes).index(name)
    return label  # ILSVRC XML <name> is sometimes a human label: the image's class then (docs/formats.md 1)


def ground_truth(boxes: Sequence[dict[str, Any]] | None, width: int, height: int, classes: Sequence[str],
                 label: int | None = None) -> GroundTruth:
    """The usable boxes (``xmin, ymin, xmax, ymax`` and ``name`` and/or ``label``) of an image of ``width x height``
    pixels, clipped to it, and a reason for each box left out (docs/formats.md 4.6)."""
    kept: list[list[float]] = []
    labels: list[int] = []
    difficult: list[bool] = []
    skipped: list[str] = []
    clipped = 0
    for i, b in enumerate(boxes or []):
        try:
            x1, y1, x2, y2 = (float(b[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (KeyError, TypeError, ValueError):
            skipped.append(f"box {i}: missing or non-numeric coordinate")
            continue
        c = _box_label(b, classes, label)
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
            reason = "non-finite coordinate"
        elif x1 > x2 or y1 > y2:
            reason = f"min > max ({x1:g},{y1:g},{x2:g},{y2:g})"
        elif x2 < 0 or y2 < 0 or x1 > width - 1 or y1 > height - 1:
            reason = f"entirely outside the {width}x{height} image"
        else:
            reason = None if c is not None else f"unknown class {b.get('name')!r}"
        if reason is not None:
            skipped.append(f"box {i}: {reason}")
            continue
        box = clip_corners(np.array([x1, y1, x2, y2]), width, height)
        if not np.array_equal(box, [x1, y1, x2, y2]):
            clipped += 1
        kept.append(box.tolist())
        labels.append(c)
        flag = b.get("difficult")  # VOC's <difficult>: bool, 0/1, "0"/"1" or None
        difficult.append(flag.strip().lower() in ("1", "true", "yes") if isinstance(flag, str) else bool(flag))
    return GroundTruth(np.array(kept, dtype=np.float64).reshape(-1, 4), np.array(labels, dtype=np.int64),
                       np.array(difficult, dtype=bool), clipped, skipped)


def image_localisation_error(guesses: Sequence[tuple[int, np.ndarray]], gt: GroundTruth, k: int = 5,
                             threshold: float = IOU_THRESHOLD) -> float:
    """Localisation error of one image (0..1) for its first ``k`` (label, box) guesses (docs/formats.md 4.3)."""
    classes = gt.classes
    if not classes:
        raise ValueError("an image without ground-truth boxes has no localisation error")
    guesses = list(guesses)[:k]
    missed = sum(not any(label == c and (iou_matrix(box, gt.of_class(c))[0] >= threshold).any()
                         for label, box in guesses) for c in classes)
    return missed / len(classes)


def image_classification_error(labels: Sequence[int], gt_classes: Sequence[int], k: int = 5) -> float:
    """Classification error of one image (0..1): ground-truth classes missing from the first ``k`` labels."""
    if not gt_classes:
        raise ValueError("an image without ground-truth classes has no classification error")
    top = set(list(labels)[:k])
    return sum(c not in top for c in gt_classes) / len(gt_classes)
