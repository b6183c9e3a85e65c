"""The ILSVRC localisation error (paper Appendix A.2; devkit ``eval_clsloc.m``; docs/formats.md sections 4.3-4.5).

An image is correct on a ground-truth class if one of its first k (label, box) guesses has that
label and a box with IoU >= 0.5 with a ground-truth box of the class; its error is the fraction of
its classes missed. The classification error is the same rule without the box term.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.localise.boxes import GroundTruth, iou_matrix

__all__ = ["IOU_THRESHOLD", "image_localisation_error", "image_classification_error", "localised"]

#: The ILSVRC criterion: a box counts when its IoU with a ground-truth box is at least this.
IOU_THRESHOLD = 0.5


def localised(box: np.ndarray, gt_boxes: np.ndarray, threshold: float = IOU_THRESHOLD) -> bool:
    """True if ``box`` overlaps any of ``gt_boxes`` (K x 4 corners) with IoU >= ``threshold``."""
    if len(gt_boxes) == 0:
        return False
    return bool((iou_matrix(box, gt_boxes)[0] >= threshold).any())


def image_localisation_error(guesses: Sequence[tuple[int, np.ndarray]], gt: GroundTruth, k: int = 5,
                             threshold: float = IOU_THRESHOLD) -> float:
    """Localisation error of one image (0..1) for its first ``k`` (label, box) guesses."""
    classes = gt.classes
    if not classes:
        raise ValueError("an image without ground-truth boxes has no localisation error")
    guesses = list(guesses)[:k]
    missed = 0
    for c in classes:
        boxes = gt.of_class(c)
        if not any(label == c and localised(box, boxes, threshold) for label, box in guesses):
            missed += 1
    return missed / len(classes)


def image_classification_error(labels: Sequence[int], gt_classes: Sequence[int], k: int = 5) -> float:
    """Classification error of one image (0..1): ground-truth classes missing from the first ``k`` labels."""
    if not gt_classes:
        raise ValueError("an image without ground-truth classes has no classification error")
    top = set(list(labels)[:k])
    return sum(c not in top for c in gt_classes) / len(gt_classes)
