"""Transfer metrics (paper Appendix B, Table 11): PASCAL VOC average precision and mean class recall.

VOC AP follows the devkit's ``VOCevalcls.m`` exactly (docs/formats.md section 2):

1. every test image has a score; an image with no score gets ``-inf`` (pass ``nan`` for "no score");
2. images are ranked by descending score with a *stable* sort (MATLAB's ``sort``), so ties keep
   the order in which the images were given;
3. label 1 is a true positive, label -1 a false positive, label 0 ("difficult" objects only) is
   neither: such an image keeps its rank but adds nothing;
4. recall = cumTP / #positives, precision = cumTP / (cumTP + cumFP);
5. ``voc07``: 11-point interpolated AP over the thresholds of MATLAB's ``0:0.1:1``;
   ``voc10`` (VOC2010 and later, VOC2012): area under the monotone precision envelope (``VOCap.m``).

A class without any positive test image has no AP: :func:`voc_ap` returns ``nan`` and the
protocol records the class as skipped (the devkit would divide by zero there).

Mean class recall (Caltech-101/256) is the mean over the classes present in the ground truth of
the per-class recall, i.e. scikit-learn's ``balanced_accuracy_score``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = ["VOC_METRICS", "voc_ap", "voc_rec_prec", "voc_map", "mean_class_recall", "per_class_recall",
           "matlab_thresholds"]

VocMetric = Literal["voc07", "voc10"]
VOC_METRICS: dict[str, str] = {
    "voc07": "VOC2007 11-point AP",
    "voc10": "VOC2010+ AP (area under the precision envelope)",
}


def matlab_thresholds(step: float = 0.1) -> np.ndarray:
    """The values of MATLAB's ``0:step:1``, bit for bit.

    MATLAB's colon operator fills the first half as ``k*step`` and the second half as
    ``1 - k*step`` (the middle element, for an even count, is the midpoint), so e.g. its 0.7 is
    ``1 - 0.3`` = 0.7 exactly, where ``np.arange(0, 1.1, 0.1)`` gives 0.7000000000000001. This
    matters when a recall equals a threshold exactly (docs/formats.md, VOC item 5).
    """
    n = int(round(1.0 / step))
    out = np.empty(n + 1)
    k = np.arange(n // 2 + 1)
    out[k] = k * step
    out[n - k] = 1.0 - k * step
    if n % 2 == 0:
        out[n // 2] = 0.5
    return out


def voc_rec_prec(scores: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Recall and precision down the ranked list, as ``VOCevalcls.m`` computes them.

    Args:
        scores: (N,) classifier scores; ``nan`` means "no score submitted" and ranks as ``-inf``.
        gt: (N,) labels 1 / -1 / 0.
    Returns:
        (rec, prec), each (N,). Precision is ``nan`` where nothing counted yet (only label-0
        images above); the AP rules ignore those entries as MATLAB's ``max`` does.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    gt = np.asarray(gt).ravel()
    if scores.shape != gt.shape:
        raise ValueError(f"scores {scores.shape} and labels {gt.shape} differ in length")
    scores = np.where(np.isnan(scores), -np.inf, scores)
    order = np.argsort(-scores, kind="stable")
    g = gt[order]
    tp = np.cumsum(g > 0)
    fp = np.cumsum(g < 0)
    npos = int((gt > 0).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        rec = tp / npos if npos else np.full(len(g), np.nan)
        prec = tp / (tp + fp)
    return rec.astype(np.float64), prec.astype(np.float64)


def _ap_11_point(rec: np.ndarray, prec: np.ndarray) -> float:
    ap = 0.0
    for t in matlab_thresholds(0.1):
        sel = prec[rec >= t]
        sel = sel[~np.isnan(sel)]
        ap += (sel.max() if sel.size else 0.0) / 11.0
    return float(ap)


def _ap_area(rec: np.ndarray, prec: np.ndarray) -> float:
    mrec = np.concatenate([[0.0], rec, [1.0]])
    mpre = np.concatenate([[0.0], prec, [0.0]])
    for i in range(len(mpre) - 2, -1, -1):  # running maximum from the right (MATLAB's max skips nan)
        mpre[i] = np.fmax(mpre[i], mpre[i + 1])
    idx = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[idx] - mrec[idx - 1]) * mpre[idx]))


def voc_ap(scores: np.ndarray, gt: np.ndarray, metric: VocMetric = "voc07") -> float:
    """Average precision of one class, exactly as the VOC devkit.

    Args:
        scores: (N,) scores of the test images (``nan`` = no score, ranks last as ``-inf``).
        gt: (N,) 1 (object present), -1 (absent), 0 (difficult objects only: ignored).
        metric: ``"voc07"`` (11-point) or ``"voc10"`` (area, VOC2010+).
    Returns:
        AP in [0, 1], or ``nan`` when the class has no positive image.
    """
    if metric not in VOC_METRICS:
        raise ValueError(f"unknown VOC metric {metric!r} (voc07 or voc10)")
    rec, prec = voc_rec_prec(scores, gt)
    if not (np.asarray(gt) > 0).any():
        return float("nan")
    return _ap_11_point(rec, prec) if metric == "voc07" else _ap_area(rec, prec)


def voc_map(scores: np.ndarray, gt: np.ndarray, metric: VocMetric = "voc07") -> tuple[float, np.ndarray]:
    """Per-class AP of an (N, C) score matrix against (N, C) 1/-1/0 labels, and their mean.

    Returns:
        (mAP over the classes that have positives, per-class AP with ``nan`` for the others).
        mAP is ``nan`` when no class has a positive.
    """
    scores = np.asarray(scores)
    gt = np.asarray(gt)
    if scores.shape != gt.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and labels {gt.shape} must be the same (N, C) shape")
    aps = np.array([voc_ap(scores[:, c], gt[:, c], metric) for c in range(gt.shape[1])])
    valid = ~np.isnan(aps)
    return (float(aps[valid].mean()) if valid.any() else float("nan")), aps


def per_class_recall(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int | None = None) -> np.ndarray:
    """Recall of every class index ``0..n_classes-1`` (``nan`` for a class absent from ``y_true``)."""
    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.int64).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in length")
    n = int(n_classes if n_classes is not None else (max(y_true.max(initial=-1), y_pred.max(initial=-1)) + 1))
    support = np.bincount(y_true, minlength=n)[:n]
    correct = np.bincount(y_true[y_true == y_pred], minlength=n)[:n]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, correct / np.maximum(support, 1), np.nan)


def mean_class_recall(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean over the classes present in ``y_true`` of (correct in class / images of the class).

    Equals ``sklearn.metrics.balanced_accuracy_score(y_true, y_pred)``.
    """
    rec = per_class_recall(y_true, y_pred)
    rec = rec[~np.isnan(rec)]
    if rec.size == 0:
        raise ValueError("mean class recall of an empty set")
    return float(rec.mean())
