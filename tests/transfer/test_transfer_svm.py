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
    from pipeline.transfer.svm import best_index as _best

    # the same recall summed in another order differs in the last bits: still a tie -> smallest C
    assert _best([0.3, 0.35000000000000003, 0.33, 0.35]) == 1
    assert _best([0.3, 0.35, 0.33, 0.35000000000000003]) == 1
    assert _best([float("nan"), 0.1, 0.2]) == 2


def _synthetic(seed: int, n: int, d: int, k: int):
    """Non-negative, L2-normalised descriptors with class structure (the paper's descriptors' shape)."""
    rng = np.random.default_rng(seed)
    mu = rng.exponential(1.0, (k, d)) * (rng.random((k, d)) < 0.2)
    y = np.arange(n) % k
    X = np.maximum(0.0, 0.8 * mu[y] + rng.normal(0, 1.0, (n, d)))
    return X / np.linalg.norm(X, axis=1, keepdims=True), y


@pytest.mark.parametrize("seed,n,d,k,C", [
    (0, 120, 400, 2, 1.0),      # n < d, two classes
    (1, 400, 60, 2, 10.0),      # n > d, two classes
    (2, 360, 500, 120, 1.0),    # n < d, 120 classes (the Gram-basis form)
    (3, 720, 80, 120, 0.1),     # n > d, 120 classes
    (4, 300, 150, 10, 100.0),   # large C: many CG iterations
])
@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_batched_solver_matches_linearsvc(seed, n, d, k, C, precision):
    X, y = _synthetic(seed, n, d, k)
    Xte, _ = _synthetic(seed + 100, 200, d, k)
    s = 1.0
    ref = LinearSVC(C=C, tol=1e-8, max_iter=500000, intercept_scaling=s).fit(X, y)
    tol = None if precision == "float64" else 1e-6  # float32 default (1e-4) is the protocol's, looser
    ours = LinearSVM(C=C, precision=precision, intercept_scaling=s, tol=tol).fit(X.astype(precision), y)
    Y = np.where(y[:, None] == ours.classes_[None, :], 1, -1)
    Y = Y[:, 1:] if k == 2 else Y
    f_ref = _objective(ref.coef_, ref.intercept_ / s, X, Y, C)
    f_ours = _objective(ours.coef_, ours.intercept_ / s, X, Y, C)
    if precision == "float64":
        assert f_ours <= f_ref * (1 + 1e-7)
        assert f_ours == pytest.approx(f_ref, rel=1e-6)
    else:  # float32 descriptors and arithmetic
        assert f_ours == pytest.approx(f_ref, rel=1e-4)
    agree = (ours.predict(Xte) == ref.predict(Xte)).mean()
    assert agree >= (0.995 if precision == "float64" else 0.98)


@pytest.mark.parametrize("s", [1.0, 10.0])
def test_intercept_scaling_is_liblinears(s):
    # the bias is w_b * s with w_b regularised: a large s makes the bias almost free, as in liblinear
    X, y = _synthetic(5, 200, 30, 3)
    X = X + 0.5  # a far-from-origin cloud: the bias matters
    ref = LinearSVC(C=1.0, tol=1e-9, max_iter=500000, intercept_scaling=s).fit(X, y)
    ours = LinearSVM(C=1.0, intercept_scaling=s).fit(X, y)
    assert np.abs(ours.intercept_ - ref.intercept_).max() < 1e-4 * max(1.0, np.abs(ref.intercept_).max())
    assert np.abs(ours.coef_ - ref.coef_).max() < 1e-4 * max(1.0, np.abs(ref.coef_).max())


def test_warm_started_path_equals_cold_solves_and_the_gram_form():
    from pipeline.transfer.ovr import OvrStats, ovr_path

    X, y = _synthetic(6, 150, 600, 7)
    Y = np.where(y[:, None] == np.arange(7)[None, :], 1, -1)
    Cs = [10.0, 0.01, 1.0]  # any order: solved ascending
    st = OvrStats()
    cp, bp = ovr_path(X, Y, Cs, tol=1e-10, reduce=False, stats=st)
    cg, bg = ovr_path(X, Y, Cs, tol=1e-10, reduce=True)
    assert st.form == "primal" and len(st.newton_steps) == 3
    for j, C in enumerate(Cs):
        cc, bc = ovr_path(X, Y, [C], tol=1e-10, reduce=False)
        assert np.abs(cp[j] - cc[0]).max() < 1e-6 and np.abs(bp[j] - bc[0]).max() < 1e-6
        assert np.abs(cg[j] - cc[0]).max() < 1e-6 and np.abs(bg[j] - bc[0]).max() < 1e-6


def test_left_out_rows_and_bad_arguments():
    from pipeline.transfer.ovr import ovr_path

    X, y = _synthetic(7, 200, 40, 4)
    Y = np.where(y[:, None] == np.arange(4)[None, :], 1, -1)
    Y[y == 3, 0] = 0  # class 3's images left out of problem 0 (VOC's "difficult")
    c, b = ovr_path(X, Y, [1.0])
    keep = Y[:, 0] != 0
    ref = LinearSVC(C=1.0, tol=1e-9, max_iter=500000).fit(X[keep], Y[keep, 0])
    assert np.abs(c[0, 0] - ref.coef_[0]).max() < 1e-4 and abs(b[0, 0] - ref.intercept_[0]) < 1e-4
    import torch
    from sklearn.exceptions import ConvergenceWarning

    with pytest.warns(ConvergenceWarning, match="stopped after 1 Newton steps"):
        ovr_path(X, Y, [100.0], tol=1e-12, max_newton=1)
    with pytest.raises(ValueError):
        ovr_path(X, Y, [1.0], dtype=torch.float16)
    with pytest.raises(ValueError):
        LinearSVM(solver="sgd").fit(X, y)


@pytest.mark.gpu
def test_solver_on_cuda_matches_cpu():
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    X, y = _synthetic(8, 600, 900, 50)
    for precision in ("float64", "float32"):
        cpu = LinearSVM(C=1.0, precision=precision).fit(X, y)
        gpu = LinearSVM(C=1.0, precision=precision, device="cuda").fit(X, y)
        tol = 1e-6 if precision == "float64" else 1e-2
        assert np.abs(gpu.coef_ - cpu.coef_).max() < tol * max(1.0, np.abs(cpu.coef_).max())
        assert (gpu.predict(X) == cpu.predict(X)).mean() > 0.99
