"""The linear SVM: the Newton solver reaches LinearSVC's minimiser; the sklearn estimator contract holds."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV
from sklearn.svm import LinearSVC

from pipeline.transfer.svm import LinearSVM, liblinear_path, svm_path


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    X = X / np.linalg.norm(X, axis=1, keepdims=True)  # L2-normalised, as the paper's descriptors
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(y))
    return X[idx[:300]], y[idx[:300]], X[idx[300:900]], y[idx[300:900]]


def _objective(coef, icpt, X, Y, C):
    """LinearSVC's problem (squared hinge, L2, bias as a regularised unit feature), summed over classes."""
    w = np.c_[coef, icpt]
    Xa = np.c_[X, np.ones(len(X))]
    m = Y != 0
    return 0.5 * (w * w).sum() + C * (np.maximum(0, 1 - Y * (Xa @ w.T)) ** 2 * m).sum()


@pytest.mark.parametrize("C", [0.01, 1.0, 100.0])
@pytest.mark.parametrize("dims", ["kernel", "primal"])
def test_newton_reaches_liblinear_minimiser(digits, C, dims):
    Xtr, ytr, Xte, yte = digits
    if dims == "kernel":  # fewer images than dimensions: the Gram-matrix form
        Xtr = np.hstack([Xtr, np.sqrt(np.abs(Xtr))])[:50]
        Xte = np.hstack([Xte, np.sqrt(np.abs(Xte))])
        ytr = ytr[:50]
    ref = LinearSVC(C=C, tol=1e-8, max_iter=200000).fit(Xtr, ytr)
    ours = LinearSVM(C=C, solver="newton").fit(Xtr, ytr)
    Y = np.where(ytr[:, None] == ours.classes_[None, :], 1, -1)
    f_ref, f_ours = _objective(ref.coef_, ref.intercept_, Xtr, Y, C), _objective(ours.coef_, ours.intercept_, Xtr, Y, C)
    assert f_ours <= f_ref * (1 + 1e-7)  # never worse than liblinear (converged hard)
    assert f_ours == pytest.approx(f_ref, rel=1e-6)
    assert np.abs(ours.coef_ - ref.coef_).max() < 1e-2 * max(1.0, np.abs(ref.coef_).max())
    assert (ours.predict(Xte) == ref.predict(Xte)).mean() > 0.995


def test_binary_and_multilabel_targets(digits):
    Xtr, ytr, Xte, _ = digits
    yb = np.where(ytr == 3, "three", "other")
    m = LinearSVM(C=1.0).fit(Xtr, yb)
    ref = LinearSVC(C=1.0, tol=1e-8, max_iter=100000).fit(Xtr, yb)
    assert m.decision_function(Xte).shape == (len(Xte),)
    assert list(m.classes_) == list(ref.classes_)
    assert (m.predict(Xte) == ref.predict(Xte)).mean() > 0.995
    # multi-label 1/-1/0: label 0 rows are left out of that class's SVM
    Y = np.stack([np.where(ytr == c, 1, -1) for c in range(3)], axis=1)
    Y[ytr == 8, 1] = 0
    ml = LinearSVM(C=1.0).fit(Xtr, Y)
    keep = Y[:, 1] != 0
    ref1 = LinearSVC(C=1.0, tol=1e-8, max_iter=100000).fit(Xtr[keep], Y[keep, 1])
    assert ml.decision_function(Xte).shape == (len(Xte), 3)
    assert np.abs(ml.coef_[1] - ref1.coef_[0]).max() < 1e-3
    assert set(np.unique(ml.predict(Xte))) <= {-1, 1}


def test_paths_agree_across_a_grid(digits):
    Xtr, ytr, _, _ = digits
    Y = np.where(ytr[:, None] == np.arange(10)[None, :], 1, -1)
    Cs = [0.1, 1.0, 10.0]
    c1, b1 = svm_path(Xtr, Y, Cs)
    c2, b2 = liblinear_path(Xtr, Y, Cs, tol=1e-8, max_iter=200000)
    for j, C in enumerate(Cs):
        assert _objective(c1[j], b1[j], Xtr, Y, C) == pytest.approx(_objective(c2[j], b2[j], Xtr, Y, C), rel=1e-6)


def test_sklearn_estimator_contract(digits):
    Xtr, ytr, Xte, yte = digits
    est = LinearSVM(C=0.5, solver="newton")
    assert clone(est).get_params()["C"] == 0.5
    gs = GridSearchCV(LinearSVM(), {"C": [0.1, 10.0]}, cv=3, scoring="balanced_accuracy").fit(Xtr, ytr)
    assert gs.best_params_["C"] in (0.1, 10.0)
    assert gs.score(Xte, yte) > 0.85  # a real classifier on real digits
    with pytest.raises(ValueError):
        LinearSVM().fit(Xtr, np.zeros(len(Xtr)))  # one class only
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        LinearSVM().predict(Xte)


def test_c_choice_prefers_the_smallest_c_on_ties():
    from pipeline.transfer.protocols import _best

    # the same recall summed in another order differs in the last bits: still a tie -> smallest C
    assert _best([0.3, 0.35000000000000003, 0.33, 0.35]) == 1
    assert _best([0.3, 0.35, 0.33, 0.35000000000000003]) == 1
    assert _best([float("nan"), 0.1, 0.2]) == 2
