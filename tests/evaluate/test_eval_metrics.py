"""Top-1/top-5 error and per-class accuracy against scikit-learn on real classifier outputs."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, recall_score, top_k_accuracy_score

from pipeline.errors import UserError
from pipeline.evaluate import classification_report, per_class_accuracy, topk_error


@pytest.fixture(scope="module")
def digits_posteriors():
    """Posteriors of a weak logistic regression on scikit-learn's digits (real data, many errors)."""
    x, y = load_digits(return_X_y=True)
    clf = LogisticRegression(C=1e-4, max_iter=200).fit(x[:300], y[:300])
    return clf.predict_proba(x[300:800]), y[300:800]


def test_topk_error_matches_sklearn(digits_posteriors):
    p, y = digits_posteriors
    for k in (1, 2, 5):
        assert topk_error(p, y, k) == pytest.approx(1 - top_k_accuracy_score(y, p, k=k, labels=range(10)))
    assert 0.05 < topk_error(p, y, 1) < 0.9  # a non-trivial case


def test_per_class_accuracy_matches_sklearn(digits_posteriors):
    p, y = digits_posteriors
    pred = p.argmax(1)
    np.testing.assert_allclose(per_class_accuracy(p, y), recall_score(y, pred, average=None))
    rep = classification_report(p, y, [f"d{i}" for i in range(10)])
    assert rep["mean_class_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert rep["n_images"] == len(y) and set(rep["per_class_accuracy"]) == {f"d{i}" for i in range(10)}


def test_ties_do_not_count_as_hits():
    uniform = np.full((4, 10), 0.1)
    labels = np.array([0, 3, 7, 9])
    assert topk_error(uniform, labels, 1) == 0.75  # argmax convention: class 0 predicted
    assert topk_error(uniform, labels, 5) == 0.5  # classes 0-4 are the top 5


def test_absent_classes_and_bad_input():
    p = np.eye(3)[[0, 0, 1]]
    acc = per_class_accuracy(p, np.array([0, 0, 1]))
    assert acc[0] == 1 and acc[1] == 1 and np.isnan(acc[2])
    assert classification_report(p, np.array([0, 0, 1]))["mean_class_accuracy"] == 1.0
    assert classification_report(p, np.array([0, 0, 1]))["top5_k"] == 3
    with pytest.raises(UserError, match="labels must lie"):
        topk_error(p, np.array([0, 5, 1]))
    with pytest.raises(UserError, match="N x C"):
        topk_error(p, np.array([0, 1]))
