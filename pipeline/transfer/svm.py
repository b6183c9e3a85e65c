"""Linear SVMs on fixed deep descriptors (paper Appendix B: "combined with a linear SVM classifier").

The problem is scikit-learn's ``LinearSVC`` default, one vs rest, for each class::

    min_w  1/2 ||w||^2 + C * sum_i max(0, 1 - y_i w.x_i)^2        (squared hinge, L2)

with the bias as an extra feature of value ``intercept_scaling`` (regularised, as liblinear does).
Two solvers give the same minimiser:

* ``"liblinear"``: ``sklearn.svm.LinearSVC`` itself (dual coordinate descent), the reference;
* ``"newton"``: the finite Newton method for L2-loss SVMs (Keerthi & DeCoste, JMLR 2005) in the
  span of the training images: with the Gram matrix ``K = X X^T + s^2`` and ``w = X^T beta``, each
  step solves ``(K_SV + I/(2C)) beta_SV = y_SV`` on the current margin violators SV, followed by an
  exact line search; it stops when the violator set no longer changes. One Gram matrix serves
  every class and every C of a grid (warm-started from the previous C), which is what makes the
  Caltech protocol fast when the images are fewer than the descriptor dimensions.

:class:`LinearSVM` keeps the scikit-learn estimator contract (arguments stored in ``__init__``,
learned state ending in ``_``, ``fit`` returns ``self``), so pipelines and grid searches work on it.
Multi-label targets (an N x C matrix of 1/-1/0, VOC) train one SVM per class on the images labelled
1 or -1 for that class; label 0 ("difficult only") images are left out of that class's training.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

__all__ = ["LinearSVM", "newton_l2svm", "svm_path", "gram", "choose_solver", "liblinear_path", "newton_cost"]

#: "auto" uses Newton while one step over all problems (:func:`newton_cost`) stays below this.
NEWTON_BUDGET_FLOPS = 2e11


def gram(A: np.ndarray, B: np.ndarray | None = None, intercept_scaling: float = 1.0) -> np.ndarray:
    """``A B^T + s^2`` in float64: the Gram matrix of the bias-augmented descriptors."""
    A64 = np.asarray(A, dtype=np.float64)
    B64 = A64 if B is None else np.asarray(B, dtype=np.float64)
    K = A64 @ B64.T
    K += intercept_scaling ** 2
    return K


def _line_search(reg_slope: float, curvature: float, r: np.ndarray, s: np.ndarray, C: float) -> float:
    """Exact minimiser over t >= 0 of the objective along a Newton direction (piecewise quadratic).

    phi'(t) = reg_slope + t curvature - 2C sum_{r_i - t s_i > 0} s_i (r_i - t s_i) is nondecreasing
    (r = margins' slack 1 - y f, s = y times the change of f along the direction); bracket its
    root, then solve the linear piece that holds it.
    """
    def piece(t: float) -> tuple[float, float, np.ndarray]:
        act = (r - t * s) > 0
        a = reg_slope - 2.0 * C * float(np.dot(s[act], r[act]))
        b = curvature + 2.0 * C * float(np.dot(s[act], s[act]))
        return a, b, act

    def slope(t: float) -> float:
        a, b, _ = piece(t)
        return a + b * t

    lo, hi = 0.0, 1.0
    while slope(hi) < 0 and hi < 1e6:
        lo, hi = hi, hi * 2.0
    for _ in range(100):
        if np.array_equal(piece(lo)[2], piece(hi)[2]):
            break
        mid = 0.5 * (lo + hi)
        if slope(mid) < 0:
            lo = mid
        else:
            hi = mid
    a, b, _ = piece(lo)
    t = -a / b if b > 0 else hi
    return float(min(max(t, lo), hi))


def newton_l2svm(K: np.ndarray | None, y: np.ndarray, C: float, X: np.ndarray | None = None,
                 start: np.ndarray | None = None, max_iter: int = 100) -> tuple[np.ndarray, int]:
    """Minimise the L2-loss SVM objective by finite Newton steps with exact line search.

    Kernel form (``K`` given): over ``beta`` with ``f = K beta``, objective
    ``1/2 beta'K beta + C sum max(0, 1 - y f)^2``; each step solves ``(K_SV + I/2C) beta_SV = y_SV``.
    Primal form (``K`` None, ``X`` the bias-augmented descriptors): over ``w`` with ``f = X w``,
    objective ``1/2 |w|^2 + C sum max(0, 1 - y f)^2``; each step solves
    ``(X_SV'X_SV + I/2C) w = X_SV'y_SV``. Use whichever system is smaller (rows vs dimensions).

    Args:
        K: (n, n) Gram matrix of the bias-augmented training descriptors, or None.
        y: (n,) labels in {-1, +1}.
        C: SVM cost.
        X: (n, D+1) bias-augmented descriptors (primal form only).
        start: warm start (e.g. the solution for a neighbouring C).
        max_iter: Newton steps at most (it usually stops in under 10).
    Returns:
        (beta or w, steps taken).
    """
    y = np.asarray(y, dtype=np.float64)
    lam = 1.0 / (2.0 * C)
    primal = K is None
    dim = X.shape[1] if primal else len(y)
    v = np.zeros(dim) if start is None else np.array(start, dtype=np.float64)
    f = (X @ v) if primal else (K @ v)
    for step in range(1, max_iter + 1):
        sv = np.flatnonzero(y * f < 1.0)
        if primal:
            Xs = X[sv]
            A = Xs.T @ Xs
            A[np.diag_indices_from(A)] += lam
            target = scipy.linalg.solve(A, Xs.T @ y[sv], assume_a="pos", check_finite=False)
        else:
            target = np.zeros(dim)
            if sv.size:
                A = K[np.ix_(sv, sv)]
                A[np.diag_indices_from(A)] += lam
                target[sv] = scipy.linalg.solve(A, y[sv], assume_a="pos", check_finite=False)
        d = target - v
        if not d.any():
            return v, step
        if primal:
            g = X @ d
            reg_slope, curvature = float(v @ d), float(d @ d)
        else:
            nz = np.flatnonzero(d)
            g = K[:, nz] @ d[nz]
            reg_slope, curvature = float(d @ f), float(d @ g)
        t = _line_search(reg_slope, curvature, 1.0 - y * f, y * g, C)
        v += t * d
        f += t * g
        if abs(t - 1.0) < 1e-12 and np.array_equal(np.flatnonzero(y * f < 1.0), sv):
            return v, step
        if t * np.abs(d).max() <= 1e-12 * max(1.0, np.abs(v).max()):
            return v, step
    return v, max_iter


def newton_cost(n_rows: int, n_dims: int, n_problems: int) -> float:
    """Rough flops of one Newton step over all problems (the smaller of the two systems)."""
    m = min(n_rows, n_dims + 1)
    return n_problems * (m ** 3 / 3.0 + (n_rows * n_dims * m if n_dims + 1 < n_rows else 0))


def svm_path(X: np.ndarray, Y: np.ndarray, Cs: list[float], intercept_scaling: float = 1.0,
             max_iter: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Newton solutions for every problem (column of ``Y``) and every C.

    The kernel form shares one Gram matrix across problems and Cs when the images are fewer than
    the dimensions; otherwise the primal form is used. Each C is warm-started from the previous
    (ascending) one. Small systems run with one BLAS thread (threads only add contention there).

    Args:
        X: (n, D) training descriptors.
        Y: (n, P) targets in {+1, -1}; 0 leaves the row out of that problem.
        Cs: the C values.
        intercept_scaling: value of the constant feature carrying the bias.
    Returns:
        (coef (len(Cs), P, D), intercept (len(Cs), P)); decision values are ``X @ coef.T + intercept``.
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y)
    n, D = X.shape
    P = Y.shape[1]
    s = float(intercept_scaling)
    coef = np.zeros((len(Cs), P, D))
    icpt = np.zeros((len(Cs), P))
    primal = D + 1 < n
    order = np.argsort(Cs)
    with threadpool_limits(limits=1 if min(n, D + 1) < 1500 else None):
        Xa = np.hstack([X, np.full((n, 1), s)])
        K = None if primal else gram(X, intercept_scaling=s)
        for p in range(P):
            rows = np.flatnonzero(Y[:, p] != 0)
            yp = Y[rows, p].astype(np.float64)
            Kp = None if primal else K[np.ix_(rows, rows)]
            v = None
            for j in order:
                v, _ = newton_l2svm(Kp, yp, float(Cs[j]), X=Xa[rows] if primal else None, start=v, max_iter=max_iter)
                w = v if primal else v @ Xa[rows]
                coef[j, p], icpt[j, p] = w[:D], w[D] * s
    return coef, icpt


def _targets(y: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """(classes_, (n, P) +1/-1/0 targets, multilabel) for 1-D class labels or a 1/-1/0 matrix."""
    y = np.asarray(y)
    if y.ndim == 2:
        if not np.isin(y, (-1, 0, 1)).all():
            raise ValueError("multi-label targets must be 1 / -1 / 0")
        return np.arange(y.shape[1]), y.astype(np.int8), True
    classes = np.unique(y)
    if classes.size < 2:
        raise ValueError(f"need at least 2 classes to train an SVM, got {classes.size}")
    Y = np.where(y[:, None] == classes[None, :], 1, -1).astype(np.int8)
    if classes.size == 2:
        Y = Y[:, 1:]  # binary: one SVM, positive class = classes_[1] (LinearSVC's convention)
    return classes, Y, False


def liblinear_path(X: np.ndarray, Y: np.ndarray, Cs: list[float], intercept_scaling: float = 1.0,
                   tol: float = 1e-4, max_iter: int = 10000) -> tuple[np.ndarray, np.ndarray]:
    """``LinearSVC`` fits for every problem and C: (coef (len(Cs), P, D), intercept (len(Cs), P))."""
    Y = np.asarray(Y)
    coef = np.zeros((len(Cs), Y.shape[1], X.shape[1]))
    icpt = np.zeros((len(Cs), Y.shape[1]))
    for j, C in enumerate(Cs):
        for p in range(Y.shape[1]):
            rows = Y[:, p] != 0
            if np.unique(Y[rows, p]).size < 2:  # one class only: a constant decision (liblinear refuses)
                icpt[j, p] = float(Y[rows, p][0]) if rows.any() else -1.0
                continue
            m = LinearSVC(C=C, loss="squared_hinge", dual=True, tol=tol, max_iter=max_iter,
                          intercept_scaling=intercept_scaling)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                m.fit(X[rows], Y[rows, p])
            coef[j, p], icpt[j, p] = m.coef_[0], m.intercept_[0]
    return coef, icpt


def choose_solver(solver: str, n_rows: int, n_dims: int, n_problems: int) -> str:
    """Resolve ``"auto"``: Newton while one step over all problems stays within :data:`NEWTON_BUDGET_FLOPS`."""
    if solver not in ("auto", "newton", "liblinear"):
        raise ValueError(f"unknown solver {solver!r} (auto, newton, liblinear)")
    if solver != "auto":
        return solver
    return "newton" if newton_cost(n_rows, n_dims, n_problems) <= NEWTON_BUDGET_FLOPS else "liblinear"


class LinearSVM(ClassifierMixin, BaseEstimator):
    """One-vs-rest linear SVMs (squared hinge, L2), the problem of ``LinearSVC``.

    Args:
        C: cost of margin violations.
        solver: ``"newton"`` (Gram-space finite Newton), ``"liblinear"`` (``LinearSVC``) or
            ``"auto"`` (Newton when the training set is small enough, see :func:`choose_solver`).
        intercept_scaling: value of the constant feature that carries the (regularised) bias.
        tol, max_iter: passed to ``LinearSVC`` by the liblinear solver.
    Attributes:
        classes_: class labels (single-label) or class indices (multi-label).
        coef_: (P, D) weights; intercept_: (P,) biases; P = 1 for two classes.
        multilabel_: whether ``y`` was an N x C matrix of 1/-1/0.
        solver_: the solver used.
    """

    def __init__(self, C: float = 1.0, solver: str = "newton", intercept_scaling: float = 1.0,
                 tol: float = 1e-4, max_iter: int = 10000) -> None:
        self.C = C
        self.solver = solver
        self.intercept_scaling = intercept_scaling
        self.tol = tol
        self.max_iter = max_iter

    def fit(self, X: np.ndarray, y: np.ndarray) -> LinearSVM:
        """Train one SVM per class (or one for two classes). Returns ``self``."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or len(X) != len(y):
            raise ValueError(f"X must be (n, d) with one row per label, got {X.shape} for {len(y)} labels")
        self.classes_, Y, self.multilabel_ = _targets(y)
        self.n_features_in_ = X.shape[1]
        self.solver_ = choose_solver(self.solver, X.shape[0], X.shape[1], Y.shape[1])
        path = liblinear_path if self.solver_ == "liblinear" else svm_path
        kw = {"tol": self.tol, "max_iter": self.max_iter} if self.solver_ == "liblinear" else {}
        coef, icpt = path(X, Y, [self.C], intercept_scaling=self.intercept_scaling, **kw)
        self.coef_, self.intercept_ = coef[0], icpt[0]
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """(n, P) decision values; (n,) for two classes, as ``LinearSVC``."""
        check_is_fitted(self, "coef_")
        d = np.asarray(X, dtype=np.float64) @ self.coef_.T + self.intercept_
        return d.ravel() if (d.shape[1] == 1 and not self.multilabel_) else d

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Class labels (argmax of the decision values), or an (n, C) 1/-1 matrix when multi-label."""
        d = self.decision_function(X)
        if self.multilabel_:
            return np.where(d > 0, 1, -1)
        if d.ndim == 1:
            return self.classes_[(d > 0).astype(int)]
        return self.classes_[np.argmax(d, axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
