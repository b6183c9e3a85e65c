"""Classification measures of paper Section 4: top-1 and top-5 error (fractions), and per-class accuracy; ties go
to the lower class index, as ``argmax`` (docs/evaluation.md)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.errors import UserError

__all__ = ["topk_error", "true_class_ranks", "classification_report", "per_class_accuracy"]


def _check(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores, labels = np.asarray(scores), np.asarray(labels, dtype=np.int64)
    if scores.ndim != 2 or labels.ndim != 1 or len(scores) != len(labels):
        raise UserError(f"scores must be N x C and labels N, got {scores.shape} and {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= scores.shape[1]):
        raise UserError(f"labels must lie in [0, {scores.shape[1]}), got [{labels.min()}, {labels.max()}]")
    return scores, labels


def true_class_ranks(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Number of classes ranked above the true class, per image (ties: lower index first)."""
    true = scores[np.arange(len(labels)), labels][:, None]
    before = np.arange(scores.shape[1])[None, :] < labels[:, None]
    return ((scores > true) | ((scores == true) & before)).sum(axis=1)


def topk_error(scores: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Fraction of images whose true class is not among the ``k`` highest scores (NaN if none)."""
    scores, labels = _check(scores, labels)
    return float(np.mean(true_class_ranks(scores, labels) >= k)) if len(labels) else float("nan")


def per_class_accuracy(scores: np.ndarray, labels: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """Top-1 accuracy within each class (NaN for a class with no images)."""
    scores, labels = _check(scores, labels)
    c = num_classes or scores.shape[1]
    correct = true_class_ranks(scores, labels) == 0
    total = np.bincount(labels, minlength=c).astype(np.float64)
    hits = np.bincount(labels, weights=correct.astype(np.float64), minlength=c)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, hits / np.maximum(total, 1), np.nan)


def classification_report(scores: np.ndarray, labels: np.ndarray, classes: Sequence[str] | None = None) -> dict:
    """top1_error, top5_error, per-class accuracy (keyed by ``classes``, default indices) and its mean, and the
    image count, of N x C ``scores`` (only their order matters) against N class indices."""
    scores, labels = _check(scores, labels)
    k5 = min(5, scores.shape[1])
    pca = per_class_accuracy(scores, labels)
    names = list(classes) if classes is not None else [str(i) for i in range(scores.shape[1])]
    if len(names) != scores.shape[1]:
        raise UserError(f"{len(names)} class names for {scores.shape[1]} scores per image")
    present = ~np.isnan(pca)
    return {
        "top1_error": topk_error(scores, labels, 1),
        "top5_error": topk_error(scores, labels, k5),
        "top5_k": k5,
        "n_images": int(len(labels)),
        "mean_class_accuracy": float(np.mean(pca[present])) if present.any() else float("nan"),
        "per_class_accuracy": {n: (None if np.isnan(a) else float(a)) for n, a in zip(names, pca, strict=False)},
    }
