"""The two evaluation protocols of paper Appendix B on descriptor matrices.

* :func:`recall_protocol` (Caltech-101/256, generic single-label sets): for each split, one-vs-rest
  linear SVMs are trained for every C of the grid on the training images minus the validation
  ones, C is chosen by the mean class recall on the validation images (ties: the smallest C), the
  SVMs are refit on all training images with that C and the test images are classified by the
  largest decision value; the result is the mean class recall per split.
* :func:`voc_protocol` (VOC 2007/2012 classification): one linear SVM per class; for every C the
  SVMs are trained on ``fit`` rows and scored on ``val`` rows by AP, C is chosen by the mean AP
  (or per class), the SVMs are refit on the ``train`` rows and score the ``test`` rows. Images
  labelled 0 for a class ("difficult" only) are left out of that class's training; test images
  without a descriptor get no score (``-inf``, the devkit's rule).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.errors import UserError
from pipeline.transfer.metrics import mean_class_recall, per_class_recall, voc_map
from pipeline.transfer.splits import Split
from pipeline.transfer.svm import choose_solver, liblinear_path, svm_path

__all__ = ["fit_grid", "one_vs_rest", "RecallSplitResult", "recall_protocol", "VocResult", "voc_protocol"]


def one_vs_rest(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(n, C) +1/-1 targets of single class labels."""
    return np.where(np.asarray(labels)[:, None] == np.arange(n_classes)[None, :], 1, -1).astype(np.int8)


def fit_grid(X: np.ndarray, Y: np.ndarray, Cs: list[float], solver: str = "auto") -> tuple[np.ndarray, np.ndarray, str]:
    """Linear SVMs for every problem (column of ``Y``, +1/-1, 0 = left out) and every C.

    Returns:
        (coef (len(Cs), P, D), intercept (len(Cs), P), the solver used).
    """
    used = choose_solver(solver, X.shape[0], X.shape[1], Y.shape[1])
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
    """Caltech-style evaluation: choose C on each split's validation images, refit, test.

    Args:
        X: (N, D) descriptors; labels: (N,) class indices; splits: row indices per split.
        Cs: the C grid (ascending); solver: ``auto``, ``newton`` or ``liblinear``.
        progress: optional callable(done_steps) after each split.
    Returns:
        One :class:`RecallSplitResult` per split.
    """
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
class VocResult:
    """The VOC protocol's outcome."""

    mean: float
    per_class: np.ndarray
    C: list[float]
    val_scores: list[float]
    val_per_class: np.ndarray
    decisions: np.ndarray
    gt: np.ndarray
    solver: str


def voc_protocol(X: np.ndarray, gt: np.ndarray, fit: np.ndarray, val: np.ndarray, train: np.ndarray,
                 test: np.ndarray, test_gt: np.ndarray, Cs: list[float], metric: str = "voc07",
                 solver: str = "auto", c_per_class: bool = False) -> VocResult:
    """VOC classification: choose C on ``val`` (SVMs trained on ``fit``), refit on ``train``, AP on ``test``.

    Args:
        X: (N, D) descriptors; gt: (N, C) 1/-1/0 labels of the rows.
        fit, val, train: row indices.
        test: row indices of the test images, -1 for a test image without a descriptor (no score).
        test_gt: (len(test), C) labels of the test images (rows of ``gt`` or the devkit's files).
        Cs: the C grid; metric: ``voc07`` or ``voc10``; c_per_class: choose C per class.
    Returns:
        :class:`VocResult` (AP per class: ``nan`` for a class without positive test images).
    """
    Cs = sorted(float(c) for c in Cs)
    n_classes = gt.shape[1]
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
    mean, aps = voc_map(scores, test_gt, metric)
    return VocResult(mean=mean, per_class=aps, C=chosen, val_scores=val_means, val_per_class=val_aps,
                     decisions=scores, gt=np.asarray(test_gt), solver=used)
