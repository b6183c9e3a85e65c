"""VOC AP against hand-computed cases and an independent implementation; mean class recall vs sklearn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from pipeline.transfer.metrics import (
    matlab_thresholds,
    mean_class_recall,
    per_class_recall,
    voc_ap,
    voc_map,
    voc_rec_prec,
)


# ---------------------------------------------------------------- hand-computed cases
def test_ap_simple_ranking_by_hand():
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    gt = np.array([1, -1, 1, -1])
    # rec = .5 .5 1 1 ; prec = 1 .5 2/3 .5
    # 11-point: t = 0 .. 0.5 -> 1 (6 thresholds); t = 0.6 .. 1 -> 2/3 (5 thresholds)
    assert voc_ap(scores, gt, "voc07") == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)
    # area: envelope 1 up to recall .5, then 2/3 -> .5 * 1 + .5 * 2/3
    assert voc_ap(scores, gt, "voc10") == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_difficult_label_zero_is_neither_tp_nor_fp():
    # the top-ranked image has only difficult objects: ignored, so the positive at rank 2 has precision 1
    scores, gt = np.array([0.9, 0.8, 0.7]), np.array([0, 1, -1])
    assert voc_ap(scores, gt, "voc07") == pytest.approx(1.0)
    assert voc_ap(scores, gt, "voc10") == pytest.approx(1.0)
    # counted as a negative it would cost precision: 0 is not -1
    assert voc_ap(scores, np.array([-1, 1, -1]), "voc10") == pytest.approx(0.5)
    # ... and it keeps its rank: between two positives it changes nothing
    assert voc_ap(np.array([0.9, 0.8, 0.7]), np.array([1, 0, 1]), "voc10") == pytest.approx(1.0)


def test_ties_keep_the_given_order_stable_sort():
    scores = np.array([0.5, 0.5, 0.5])
    # negative first among equals: rec 0 .5 1, prec 0 .5 2/3 -> every threshold sees max 2/3
    assert voc_ap(scores, np.array([-1, 1, 1]), "voc07") == pytest.approx(2 / 3)
    assert voc_ap(scores, np.array([-1, 1, 1]), "voc10") == pytest.approx(0.5 * 2 / 3 + 0.5 * 2 / 3)
    # positives first among the same scores: perfect
    assert voc_ap(scores, np.array([1, 1, -1]), "voc07") == pytest.approx(1.0)


def test_class_without_positives_has_no_ap_and_is_left_out_of_the_mean():
    assert np.isnan(voc_ap([0.3, 0.2], [-1, -1]))
    assert np.isnan(voc_ap([0.3, 0.2], [0, -1], "voc10"))  # only difficult: still no positive
    scores = np.array([[0.9, 0.1], [0.1, 0.2]])
    gt = np.array([[1, -1], [-1, -1]])
    m, aps = voc_map(scores, gt, "voc07")
    assert np.isnan(aps[1]) and aps[0] == pytest.approx(1.0) and m == pytest.approx(1.0)


def test_missing_scores_rank_last_as_minus_infinity():
    # nan = no score submitted: ranked after every scored image, in the given order
    scores = np.array([np.nan, 0.1, -5.0])
    gt = np.array([1, -1, 1])
    # order: 0.1 (neg), -5 (pos), nan (pos): rec 0 .5 1, prec 0 .5 2/3
    assert voc_ap(scores, gt, "voc10") == pytest.approx(0.5 * 2 / 3 + 0.5 * 2 / 3)
    assert voc_ap(np.array([-np.inf, 0.1, -5.0]), gt, "voc10") == voc_ap(scores, gt, "voc10")


def test_thresholds_are_matlabs_colon_values():
    t = matlab_thresholds()
    assert len(t) == 11 and t[0] == 0.0 and t[-1] == 1.0 and t[5] == 0.5
    assert t[3] == 3 * 0.1 and t[7] == 1 - 3 * 0.1 == 0.7  # MATLAB: second half counted down from 1
    assert np.arange(0, 1.1, 0.1)[7] > 0.7  # numpy's arange would miss a recall of exactly 0.7


def test_recall_exactly_on_a_threshold():
    # 10 positives; the 7th positive arrives with precision 7/8 and nothing better follows:
    # MATLAB's 0.7 threshold includes it (recall 7/10 == 0.7); numpy's arange threshold would not.
    gt = np.array([1] * 6 + [-1, 1] + [-1] * 5 + [1, 1, 1])
    scores = -np.arange(len(gt), dtype=float)
    rec, prec = voc_rec_prec(scores, gt)
    assert rec[7] == 0.7 and prec[7] == pytest.approx(7 / 8)
    expected = (7 * 1.0 + (7 / 8) + 3 * (10 / 16)) / 11  # t=0..0.6 -> 1, t=0.7 -> 7/8, t=0.8..1 -> 10/16
    assert voc_ap(scores, gt, "voc07") == pytest.approx(expected)


# ---------------------------------------------------------------- independent implementation
def _pyfaster_rcnn_voc_ap(rec, prec, use_07_metric):
    """py-faster-rcnn lib/datasets/voc_eval.py voc_ap (written out here as the reference)."""
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            if np.sum(rec >= t) == 0:
                p = 0
            else:
                p = np.max(prec[rec >= t])
            ap = ap + p / 11.0
    else:
        mrec = np.concatenate(([0.0], rec, [1.0]))
        mpre = np.concatenate(([0.0], prec, [0.0]))
        for i in range(mpre.size - 1, 0, -1):
            mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
        i = np.where(mrec[1:] != mrec[:-1])[0]
        ap = np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])
    return ap


def _reference_rec_prec(scores, gt):
    """Plain loop over a stable ranking: label 1 true positive, -1 false positive, 0 skipped."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])  # Python's sort is stable
    tp = fp = 0
    rec, prec = [], []
    npos = sum(1 for g in gt if g > 0)
    for i in order:
        tp += gt[i] > 0
        fp += gt[i] < 0
        rec.append(tp / npos)
        prec.append(tp / max(tp + fp, np.finfo(np.float64).eps))
    return np.array(rec), np.array(prec)


@pytest.mark.parametrize("seed", range(25))
def test_ap_matches_py_faster_rcnn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 200))
    npos = 7 if seed % 2 else 13  # recalls k/7, k/13 never sit exactly on a 0.1 threshold (except 0, 1)
    gt = np.full(n, -1)
    pos = rng.choice(n, npos, replace=False)
    gt[pos] = 1
    rest = np.setdiff1d(np.arange(n), pos)
    gt[rng.choice(rest, len(rest) // 6, replace=False)] = 0  # difficult-only images
    scores = np.round(rng.normal(size=n) + 0.8 * (gt > 0), 1)  # rounded: many ties
    rec, prec = _reference_rec_prec(list(scores), list(gt))
    for metric, use07 in (("voc07", True), ("voc10", False)):
        assert voc_ap(scores, gt, metric) == pytest.approx(_pyfaster_rcnn_voc_ap(rec, prec, use07), abs=1e-12)


# ---------------------------------------------------------------- mean class recall
def test_mean_class_recall_is_balanced_accuracy():
    from sklearn.datasets import load_digits
    from sklearn.linear_model import RidgeClassifier

    X, y = load_digits(return_X_y=True)
    keep = np.concatenate([np.flatnonzero(y == c)[: 20 + 15 * c] for c in range(10)])  # imbalanced classes
    X, y = X[keep], y[keep]
    pred = RidgeClassifier(alpha=1e3).fit(X[::2], y[::2]).predict(X[1::2])  # a real, imperfect classifier
    assert mean_class_recall(y[1::2], pred) == pytest.approx(balanced_accuracy_score(y[1::2], pred))
    assert (pred != y[1::2]).any()


def test_per_class_recall_marks_absent_classes():
    rec = per_class_recall([0, 0, 2, 2], [0, 1, 2, 2], n_classes=4)
    assert rec[0] == 0.5 and np.isnan(rec[1]) and rec[2] == 1.0 and np.isnan(rec[3])
    assert mean_class_recall([0, 0, 2, 2], [0, 1, 2, 2]) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        mean_class_recall([], [])
