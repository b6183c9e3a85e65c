"""C chosen on validation images, SVMs refit, test images scored (paper Appendix B), on descriptor matrices.

:func:`recall_protocol` (Caltech, generic): per split, C by the validation mean class recall (ties:
the smallest C), refit on all training images, test images classified by the largest decision.
:func:`voc_protocol` (VOC): one SVM per class, C by the validation mAP (or per class), refit,
test images scored (label-0 images left out of a class's training; no descriptor: no score).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.errors import UserError
from pipeline.transfer.metrics import mean_class_recall, per_class_recall, voc_map
from pipeline.transfer.splits import Split
from pipeline.transfer.svm import choose_solver, liblinear_path, svm_path

__all__ = ["fit_grid", "one_vs_rest", "RecallSplitResult", "recall_protocol", "VocSplit", "VocResult", "voc_protocol"]


def one_vs_rest(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(n, C) +1/-1 targets of single class labels."""
    return np.where(np.asarray(labels)[:, None] == np.arange(n_classes)[None, :], 1, -1).astype(np.int8)


def fit_grid(X: np.ndarray, Y: np.ndarray, Cs: list[float], solver: str = "auto") -> tuple[np.ndarray, np.ndarray, str]:
    """Linear SVMs for every problem (column of ``Y``, +1/-1, 0 = left out) and every C:
    (coef (len(Cs), P, D), intercept (len(Cs), P), the solver used)."""
    used = choose_solver(solver)
    fn = liblinear_path if used == "liblinear" else svm_path
    coef, icpt = fn(X, Y, list(Cs))
    return coef, icpt, used


def _decide(X: np.ndarray, coef: np.ndarray, icpt: np.ndarray) -> np.ndarray:
    return np.asarray(X, dtype=np.float64) @ coef.T + icpt


def _best(scores: list[float], tie: float = 1e-9) -> int:
    """Index of the best score; on ties (within ``tie``: the same recall summed in another order
    differs in the last bits) the first, i.e. the smallest C of the ascending grid; nan never wins."""
    arr = np.array([-np.inf if np.isnan(s) else s for s in scores])
    return int(np.flatnonzero(arr >= arr.max() - tie)[0])


@dataclass
class RecallSplitResult:
    """One split of a recall protocol."""

    index: int
    C: float
    val_scores: list[float]
    value: float
    per_class: np.ndarray
    test_rows: np.ndarray
    decisions: np.ndarray
    predicted: np.ndarray
    solver: str


def recall_protocol(X: np.ndarray, labels: np.ndarray, n_classes: int, splits: list[Split], Cs: list[float],
                    solver: str = "auto", progress=None) -> list[RecallSplitResult]:
    """Caltech-style evaluation of (N, D) descriptors with (N,) class indices: per split, C chosen on the
    validation images, SVMs refit, test images classified; ``progress(done_splits)`` after each split."""
    Cs = sorted(float(c) for c in Cs)
    out = []
    for k, s in enumerate(splits):
        if len(s.val):
            coef, icpt, used = fit_grid(X[s.fit], one_vs_rest(labels[s.fit], n_classes), Cs, solver)
            val_scores = [mean_class_recall(labels[s.val], np.argmax(_decide(X[s.val], coef[j], icpt[j]), axis=1))
                          for j in range(len(Cs))]
            C = Cs[_best(val_scores)]
        elif len(Cs) == 1:
            val_scores, C = [], Cs[0]
        else:
            raise UserError(f"split {k} has no validation images to choose C among {len(Cs)} values; "
                            "give a validation fraction or a single C")
        coef, icpt, used = fit_grid(X[s.train], one_vs_rest(labels[s.train], n_classes), [C], solver)
        dec = _decide(X[s.test], coef[0], icpt[0])
        pred = np.argmax(dec, axis=1)
        out.append(RecallSplitResult(index=k, C=C, val_scores=val_scores, value=mean_class_recall(labels[s.test], pred),
                                     per_class=per_class_recall(labels[s.test], pred, n_classes), test_rows=s.test,
                                     decisions=dec, predicted=pred, solver=used))
        if progress is not None:
            progress(k + 1)
    return out


@dataclass
class VocSplit:
    """Rows of the VOC protocol: SVMs fit on ``fit`` choose C on ``val``, are refit on ``train`` and score
    ``test`` (-1: an image without a descriptor, no score) against ``test_gt`` (len(test), C)."""

    fit: np.ndarray
    val: np.ndarray
    train: np.ndarray
    test: np.ndarray
    test_gt: np.ndarray


@dataclass
class VocResult:
    """The VOC protocol's outcome (AP per class: ``nan`` for a class without positive test images)."""

    mean: float
    per_class: np.ndarray
    C: list[float]
    val_scores: list[float]
    val_per_class: np.ndarray
    decisions: np.ndarray
    gt: np.ndarray
    solver: str


def voc_protocol(X: np.ndarray, gt: np.ndarray, rows: VocSplit, Cs: list[float], metric: str = "voc07", *,
                 solver: str = "auto", c_per_class: bool = False) -> VocResult:
    """VOC classification of (N, D) descriptors with (N, C) 1/-1/0 labels ``gt``: C chosen on ``rows.val``
    (by mAP, or per class), SVMs refit on ``rows.train``, AP (``metric``: voc07 or voc10) on ``rows.test``."""
    Cs = sorted(float(c) for c in Cs)
    n_classes = gt.shape[1]
    fit, val, train, test = rows.fit, rows.val, rows.train, rows.test
    coef, icpt, used = fit_grid(X[fit], gt[fit], Cs, solver)
    val_aps = np.array([voc_map(_decide(X[val], coef[j], icpt[j]), gt[val], metric)[1] for j in range(len(Cs))])
    with np.errstate(invalid="ignore"):
        val_means = [float(np.nanmean(r)) if not np.isnan(r).all() else float("nan") for r in val_aps]
    if c_per_class:
        chosen = [Cs[_best(list(val_aps[:, c]))] for c in range(n_classes)]
    else:
        chosen = [Cs[_best(val_means)]] * n_classes
    scores = np.full((len(test), n_classes), np.nan)
    have = test >= 0
    for C in sorted(set(chosen)):
        cols = [c for c in range(n_classes) if chosen[c] == C]
        coef, icpt, used = fit_grid(X[train], gt[train][:, cols], [C], solver)
        scores[np.ix_(have, cols)] = _decide(X[test[have]], coef[0], icpt[0])
    mean, aps = voc_map(scores, rows.test_gt, metric)
    return VocResult(mean=mean, per_class=aps, C=chosen, val_scores=val_means, val_per_class=val_aps,
                     decisions=scores, gt=np.asarray(rows.test_gt), solver=used)
