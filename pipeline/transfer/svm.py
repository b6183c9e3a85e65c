"""Linear SVMs on fixed deep descriptors (paper Appendix B: "combined with a linear SVM classifier").

``LinearSVC``'s problem, one vs rest, by two solvers with the same minimiser: ``newton`` (``auto``), the
batched Newton-CG of :mod:`.ovr`, and ``liblinear`` (``LinearSVC`` itself, the reference); label-0
images (VOC's difficult) are left out of that class's SVM. :class:`LinearSVM` is a scikit-learn estimator.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC
from sklearn.utils.validation import check_is_fitted

__all__ = ["LinearSVM", "svm_path", "choose_solver", "liblinear_path", "one_vs_rest", "fit_grid", "linear_decisions",
           "best_index"]


def svm_path(X: np.ndarray, Y: np.ndarray, Cs: list[float], intercept_scaling: float = 1.0,
             device: str = "cpu", precision: str = "auto", tol: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Newton-CG solutions for every problem (column of ``Y``: +1/-1, 0 leaves the row out) and every C.

    ``precision``: ``float32``, ``float64`` or ``auto`` (float32 for float32 descriptors); the rest as
    :func:`~pipeline.transfer.ovr.ovr_path`. Returns (coef (len(Cs), P, D), intercept (len(Cs), P)).
    """
    import torch

    from pipeline.transfer.ovr import ovr_path

    if precision not in ("auto", "float32", "float64"):
        raise ValueError(f"unknown precision {precision!r} (auto, float32, float64)")
    X = np.asarray(X)
    if precision == "auto":
        precision = "float32" if X.dtype == np.float32 else "float64"
    dtype = torch.float32 if precision == "float32" else torch.float64
    return ovr_path(X, np.asarray(Y), list(Cs), intercept_scaling, device=device, dtype=dtype, tol=tol)


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


def choose_solver(solver: str) -> str:
    """Resolve ``"auto"``: the batched Newton-CG solver at every size."""
    if solver not in ("auto", "newton", "liblinear"):
        raise ValueError(f"unknown solver {solver!r} (auto, newton, liblinear)")
    return "liblinear" if solver == "liblinear" else "newton"


def one_vs_rest(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(n, C) +1/-1 targets of single class labels."""
    return np.where(np.asarray(labels)[:, None] == np.arange(n_classes)[None, :], 1, -1).astype(np.int8)


def fit_grid(X: np.ndarray, Y: np.ndarray, Cs: list[float], solver: str = "auto") -> tuple[np.ndarray, np.ndarray, str]:
    """Linear SVMs for every problem (column of ``Y``, +1/-1, 0 = left out) and every C:
    (coef (len(Cs), P, D), intercept (len(Cs), P), the solver used)."""
    used = choose_solver(solver)
    fn = liblinear_path if used == "liblinear" else svm_path
    return (*fn(X, Y, list(Cs)), used)


def linear_decisions(X: np.ndarray, coef: np.ndarray, icpt: np.ndarray) -> np.ndarray:
    """(n, P) decision values ``X @ coef.T + icpt`` in float64."""
    return np.asarray(X, dtype=np.float64) @ coef.T + icpt


def best_index(scores: list[float], tie: float = 1e-9) -> int:
    """Index of the best score; on ties (within ``tie``: the same recall summed in another order
    differs in the last bits) the first, i.e. the smallest C of the ascending grid; nan never wins."""
    arr = np.array([-np.inf if np.isnan(s) else s for s in scores])
    return int(np.flatnonzero(arr >= arr.max() - tie)[0])


class LinearSVM(ClassifierMixin, BaseEstimator):
    """One-vs-rest linear SVMs (squared hinge, L2), the problem of ``LinearSVC``, as a scikit-learn estimator.

    ``solver``: ``newton``/``auto`` (:func:`svm_path`; ``device``, ``precision`` and ``tol`` as there) or
    ``liblinear`` (``LinearSVC`` with ``tol``, default 1e-4, and ``max_iter``). Fitted: ``classes_``
    (labels, or class indices for 1/-1/0 targets), ``coef_`` (P, D), ``intercept_`` (P,) (P = 1 for two
    classes), ``multilabel_``, ``solver_``.
    """

    def __init__(self, C: float = 1.0, solver: str = "newton", intercept_scaling: float = 1.0,
                 tol: float | None = None, max_iter: int = 10000, device: str = "cpu",
                 precision: str = "float64") -> None:
        self.C = C
        self.solver = solver
        self.intercept_scaling = intercept_scaling
        self.tol = tol
        self.max_iter = max_iter
        self.device = device
        self.precision = precision

    def fit(self, X: np.ndarray, y: np.ndarray) -> LinearSVM:
        X = np.asarray(X)
        X = X if X.dtype in (np.float32, np.float64) else X.astype(np.float64)
        if X.ndim != 2 or len(X) != len(y):
            raise ValueError(f"X must be (n, d) with one row per label, got {X.shape} for {len(y)} labels")
        self.classes_, Y, self.multilabel_ = _targets(y)
        self.n_features_in_ = X.shape[1]
        self.solver_ = choose_solver(self.solver)
        if self.solver_ == "liblinear":
            coef, icpt = liblinear_path(X, Y, [self.C], intercept_scaling=self.intercept_scaling,
                                        tol=1e-4 if self.tol is None else self.tol, max_iter=self.max_iter)
        else:
            coef, icpt = svm_path(X, Y, [self.C], intercept_scaling=self.intercept_scaling, device=self.device,
                                  precision=self.precision, tol=self.tol)
        self.coef_, self.intercept_ = coef[0], icpt[0]
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """(n, P) decision values; (n,) for two classes, as ``LinearSVC``."""
        check_is_fitted(self, "coef_")
        d = linear_decisions(X, self.coef_, self.intercept_)
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
