"""Transfer metrics (paper Appendix B, Table 11): the VOC devkit's average precision (docs/formats.md 2.4,
items 1-7) and mean class recall (Caltech; scikit-learn's ``balanced_accuracy_score``)."""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = ["VOC_METRICS", "voc_ap", "voc_rec_prec", "voc_map", "mean_class_recall", "per_class_recall",
           "matlab_thresholds"]

VocMetric = Literal["voc07", "voc10"]
VOC_METRICS = ("voc07", "voc10")  # 11-point AP; area under the precision envelope (VOC2010+)


def matlab_thresholds(step: float = 0.1) -> np.ndarray:
    """The values of MATLAB's ``0:step:1``, bit for bit: ``k*step`` for the first half, ``1 - k*step``
    for the second (so its 0.7 is 0.7, not numpy's 0.7000000000000001; docs/formats.md, VOC item 5)."""
    n = int(round(1.0 / step))
    out = np.empty(n + 1)
    k = np.arange(n // 2 + 1)
    out[k] = k * step
    out[n - k] = 1.0 - k * step
    if n % 2 == 0:
        out[n // 2] = 0.5
    return out


def voc_rec_prec(scores: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) down the ranking of (N,) ``scores`` (``nan``: no score, ranks as ``-inf``)
    against (N,) 1/-1/0 labels, as ``VOCevalcls.m``; precision is ``nan`` where nothing counted yet."""
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
    """AP of one class as the VOC devkit (``voc07``: 11-point, ``voc10``: area) from (N,) scores (``nan``:
    no score) and (N,) 1/-1/0 labels; ``nan`` when the class has no positive image."""
    if metric not in VOC_METRICS:
        raise ValueError(f"unknown VOC metric {metric!r} (voc07 or voc10)")
    rec, prec = voc_rec_prec(scores, gt)
    if not (np.asarray(gt) > 0).any():
        return float("nan")
    return _ap_11_point(rec, prec) if metric == "voc07" else _ap_area(rec, prec)


def voc_map(scores: np.ndarray, gt: np.ndarray, metric: VocMetric = "voc07") -> tuple[float, np.ndarray]:
    """(mAP over the classes with positives, per-class AP with ``nan`` for the others) of an (N, C)
    score matrix against (N, C) 1/-1/0 labels; mAP is ``nan`` when no class has a positive."""
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
    """Mean over the classes in ``y_true`` of their recall (``sklearn``'s ``balanced_accuracy_score``)."""
    rec = per_class_recall(y_true, y_pred)
    rec = rec[~np.isnan(rec)]
    if rec.size == 0:
        raise ValueError("mean class recall of an empty set")
    return float(rec.mean())
