"""Batched one-vs-rest linear SVMs in torch (paper Appendix B: "combined with a linear SVM classifier").

Every class's problem is LinearSVC's, all classes solved at once by truncated Newton-CG (liblinear's TRON),
in the primal or an exact Gram basis, a C grid ascending and warm-started: docs/transfer.md, "The SVM solver".
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning

__all__ = ["SMALL", "OvrStats", "ovr_path"]

#: problems with fewer rows (or dimensions) than this run on one CPU thread
SMALL = 1500


@dataclass
class OvrStats:
    """What the solver did: Newton steps and CG iterations per C, the form used, the final gradient ratio."""

    form: str = "primal"
    newton_steps: list[int] = field(default_factory=list)
    cg_iterations: list[int] = field(default_factory=list)
    grad_ratio: list[float] = field(default_factory=list)


def _features(X: torch.Tensor, s: float, reduce: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(F, back) with ``F`` the rows the solver sees; ``w = Xa^T back u`` when reduced, else back is None."""
    n = X.shape[0]
    Xa = torch.cat([X, torch.full((n, 1), s, dtype=X.dtype, device=X.device)], dim=1)
    if not reduce:
        return Xa, None
    K = (Xa @ Xa.T).double()  # decomposed in float64 whatever the working precision
    lam, U = torch.linalg.eigh(K)
    keep = lam > lam.max() * (1e-12 if X.dtype == torch.float64 else 1e-7)  # the null space (repeated images) goes
    lam, U = lam[keep], U[:, keep]
    return (U * lam.sqrt()).to(X.dtype), U / lam.sqrt()


def _line_search(W, D, O, Z, Y, M, C: float, iters: int = 60) -> torch.Tensor:
    """Exact minimiser t >= 0 (P,) of the objective along D, per class (phi' is piecewise linear, nondecreasing).

    Safeguarded Newton on phi'(t) = W.D + t D.D + 2C sum_{active(t)} (O + tZ - Y) Z inside a bracket.
    """
    dtype = W.dtype
    W, D, O, Z, Y = W.double(), D.double(), O.double(), Z.double(), Y.double()  # float64 whatever the working precision
    wd, dd = (W * D).sum(0), (D * D).sum(0)

    def slope(t):
        Ot = O + t * Z
        act = ((Y * Ot) < 1.0) & M
        a = torch.where(act, (Ot - Y) * Z, torch.zeros_like(Z)).sum(0)
        b = torch.where(act, Z * Z, torch.zeros_like(Z)).sum(0)
        return wd + t * dd + 2.0 * C * a, dd + 2.0 * C * b

    lo = torch.zeros_like(wd)
    hi = torch.ones_like(wd)
    for _ in range(40):  # grow hi until phi'(hi) >= 0
        g, _ = slope(hi)
        grow = g < 0
        if not bool(grow.any()):
            break
        lo = torch.where(grow, hi, lo)
        hi = torch.where(grow, hi * 2.0, hi)
    t = hi.clone()
    for _ in range(iters):
        g, h = slope(t)
        lo = torch.where(g < 0, t, lo)
        hi = torch.where(g > 0, t, hi)
        step = t - g / h
        new = torch.where((step >= lo) & (step <= hi), step, 0.5 * (lo + hi))
        new = torch.where(g == 0, t, new)
        done = bool(((new - t).abs() <= 1e-9 * t.abs().clamp(min=1e-3)).all())
        t = new
        if done:
            break
    return t.to(dtype)


def _cg(F, A2C, G, diag, eta: float, max_cg: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Solve (I + F^T diag(A2C) F) D = -G for every column by preconditioned CG, up to ||r|| <= eta ||G||.

    Returns (D, Z = F D, iterations). Columns stop on their own; the GEMMs only carry the live ones.
    """
    P = G.shape[1]
    D = torch.zeros_like(G)
    Z = torch.zeros((F.shape[0], P), dtype=G.dtype, device=G.device)
    R = -G
    Zp = R / diag
    Pd = Zp.clone()
    rz = (R * Zp).sum(0)
    stop = eta * G.norm(dim=0)
    live = torch.arange(P, device=G.device)
    it = 0
    for it in range(1, max_cg + 1):  # noqa: B007 - the count is returned
        Pl = Pd[:, live]
        FP = F @ Pl
        Q = Pl + F.T @ (A2C[:, live] * FP)
        alpha = rz[live] / (Pl * Q).sum(0)
        D[:, live] += alpha * Pl
        Z[:, live] += alpha * FP
        Rl = R[:, live] - alpha * Q
        R[:, live] = Rl
        ok = Rl.norm(dim=0) > stop[live]
        Zl = Rl / diag[:, live]
        rz_new = (Rl * Zl).sum(0)
        Pd[:, live] = Zl + (rz_new / rz[live]) * Pl
        rz[live] = rz_new
        live = live[ok]
        if live.numel() == 0:
            break
    return D, Z, it


def _solve_c(F, F2, Y, M, W, C: float, tol: float, max_newton: int,
             max_cg: int) -> tuple[torch.Tensor, int, int, float]:
    """Newton-CG for every class at one C from the warm start W; (W, Newton steps, CG iterations, max |g|/|g0|)."""
    O = F @ W
    g0 = (2.0 * C * (F.T @ Y)).norm(dim=0).clamp(min=1e-30)  # |gradient| at w = 0
    steps = cg_total = 0
    ratio = float("inf")
    live = torch.arange(Y.shape[1], device=F.device)
    for steps in range(1, max_newton + 1):  # noqa: B007 - the count is returned
        Ol, Yl, Ml = O[:, live], Y[:, live], M[:, live]
        act = (((Yl * Ol) < 1.0) & Ml).to(F.dtype)
        G = W[:, live] + 2.0 * C * (F.T @ (act * (Ol - Yl)))
        gn = G.norm(dim=0) / g0[live]
        ratio = float(gn.max())
        keep = gn > tol
        if not bool(keep.any()):
            break
        live, G, act, Ol, Yl, Ml = live[keep], G[:, keep], act[:, keep], Ol[:, keep], Yl[:, keep], Ml[:, keep]
        diag = 1.0 + 2.0 * C * (F2.T @ act)
        eta = 0.1  # TRON's forcing term: 45% fewer products than sqrt(|g|) on the benchmark's slice
        D, Z, its = _cg(F, 2.0 * C * act, G, diag, eta, max_cg)
        cg_total += its
        t = _line_search(W[:, live], D, Ol, Z, Yl, Ml, C)
        W[:, live] += t * D
        O[:, live] = Ol + t * Z
    return W, steps, cg_total, ratio


def ovr_path(X: np.ndarray, Y: np.ndarray, Cs: list[float], intercept_scaling: float = 1.0, *,
             device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64, tol: float | None = None,
             max_newton: int = 100, max_cg: int = 1000, reduce: bool | None = None,
             stats: OvrStats | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Batched one-vs-rest squared-hinge SVMs of (n, D) ``X`` for every C of ``Cs`` (solved ascending, warm-started).

    ``Y``: (n, P) targets +1/-1 (0 leaves the row out of that class's problem); ``dtype``: float32 or
    float64; ``tol``: stop a class at |gradient| <= tol |gradient at 0| (default 1e-8, float32 1e-4);
    ``reduce``: the Gram basis (default: n < D / 2); ``stats`` is filled in if given. Problems under
    :data:`SMALL` rows or dimensions run on one CPU thread. Returns float64 (coef (len(Cs), P, D),
    intercept (len(Cs), P)); decisions are ``X @ coef.T + intercept``.
    """
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    n, Dim = X.shape
    s = float(intercept_scaling)
    tol = tol if tol is not None else (1e-8 if dtype == torch.float64 else 1e-4)
    reduce = (n < (Dim + 1) // 2) if reduce is None else reduce
    small = torch.device(device).type == "cpu" and min(n, Dim + 1) < SMALL
    threads = torch.get_num_threads()
    if small:  # products of a few MFLOP: a second thread only waits (8x slower on a busy machine)
        torch.set_num_threads(1)
    try:
        Xt = torch.as_tensor(np.asarray(X), device=device).to(dtype)
        Yt = torch.as_tensor(np.asarray(Y), device=device).to(dtype)
        Mt = Yt != 0
        F, back = _features(Xt, s, reduce)
        if back is not None:
            Xa64 = torch.cat([Xt.double(), torch.full((n, 1), s, dtype=torch.float64, device=device)], 1)
        F2 = F * F  # the Jacobi preconditioner's diagonal is F2^T (active rows)
        W = torch.zeros((F.shape[1], Yt.shape[1]), dtype=dtype, device=device)
        coef = np.zeros((len(Cs), Yt.shape[1], Dim))
        icpt = np.zeros((len(Cs), Yt.shape[1]))
        if stats is not None:
            stats.form = "gram" if reduce else "primal"
        for j in np.argsort(Cs):
            W, steps, cg, ratio = _solve_c(F, F2, Yt, Mt, W, float(Cs[j]), tol, max_newton, max_cg)
            if ratio > tol:
                warnings.warn(f"C={float(Cs[j]):g}: stopped after {steps} Newton steps at |gradient| / "
                              f"|gradient at 0| = {ratio:.2g} > tol {tol:g}", ConvergenceWarning, stacklevel=2)
            if stats is not None:
                stats.newton_steps.append(steps)
                stats.cg_iterations.append(cg)
                stats.grad_ratio.append(ratio)
            w64 = (W.double() if back is None else Xa64.T @ (back @ W.double())).cpu().numpy()
            coef[j], icpt[j] = w64[:Dim].T, w64[Dim] * s
        return coef, icpt
    finally:
        torch.set_num_threads(threads)
