"""Caltech-101 / Caltech-256 and ``generic`` (paper Appendix B, Table 11): mean class recall over random splits
(docs/formats.md 3.4)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.errors import UserError
from pipeline.runtime import Progress
from pipeline.transfer.metrics import mean_class_recall, per_class_recall
from pipeline.transfer.report import class_values, write_csv
from pipeline.transfer.splits import Split, load_splits, make_splits, save_splits
from pipeline.transfer.svm import best_index, fit_grid, linear_decisions, one_vs_rest

if TYPE_CHECKING:
    from pipeline.transfer.run import TransferContext

__all__ = ["RecallSplitResult", "recall_protocol", "evaluate_caltech"]


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
            val_scores = [mean_class_recall(labels[s.val], linear_decisions(X[s.val], coef[j], icpt[j]).argmax(1))
                          for j in range(len(Cs))]
            C = Cs[best_index(val_scores)]
        elif len(Cs) == 1:
            val_scores, C = [], Cs[0]
        else:
            raise UserError(f"split {k} has no validation images to choose C among {len(Cs)} values; "
                            "give a validation fraction or a single C")
        coef, icpt, used = fit_grid(X[s.train], one_vs_rest(labels[s.train], n_classes), [C], solver)
        dec = linear_decisions(X[s.test], coef[0], icpt[0])
        pred = np.argmax(dec, axis=1)
        out.append(RecallSplitResult(index=k, C=C, val_scores=val_scores, value=mean_class_recall(labels[s.test], pred),
                                     per_class=per_class_recall(labels[s.test], pred, n_classes), test_rows=s.test,
                                     decisions=dec, predicted=pred, solver=used))
        if progress is not None:
            progress(k + 1)
    return out


def evaluate_caltech(ctx: TransferContext) -> dict[str, Any]:
    """The recall protocol on the context's descriptors; returns the body of ``transfer.json``."""
    cfg, d, test_start = ctx.cfg, ctx.d, ctx.test_start
    if d.label_kind != "single" or d.labels.ndim != 1:
        raise UserError(
            f"the {cfg.protocol} protocol needs single-label stores; use voc07 or voc12 for multi-label ones"
        )
    n_train = cfg.train_per_class or ctx.protocol.train_per_class
    n_test = cfg.test_per_class or ctx.protocol.test_per_class
    if cfg.splits_file:
        splits, meta = load_splits(cfg.splits_file, list(d.ids))
    else:
        pool = d.labels if test_start is None else d.labels[:test_start]
        test_labels = None if test_start is None else d.labels[test_start:]
        splits = make_splits(pool, d.classes, n_train, n_test, cfg.n_splits, cfg.seed, cfg.val_fraction, test_labels)
        meta = {"protocol": cfg.protocol, "train_per_class": n_train, "test_per_class": n_test, "seed": cfg.seed,
                "val_fraction": cfg.val_fraction}
    save_splits(ctx.out / "splits.json", splits, list(d.ids), meta)
    with Progress(len(splits), f"transfer {cfg.protocol}", enabled=cfg.progress, unit="splits") as bar:
        res = recall_protocol(d.X, d.labels, len(d.classes), splits, cfg.c_grid, cfg.solver,
                              progress=lambda k: bar.advance(k - bar.done))
    for r in res:
        header = ["id", "label", "predicted"] + [f"score_{c}" for c in d.classes]
        write_csv(ctx.out / "decisions" / f"split{r.index}.csv", header,
                  [[d.ids[row], int(d.labels[row]), int(p), *map(float, s)]
                   for row, p, s in zip(r.test_rows, r.predicted, r.decisions, strict=False)])
    values = np.array([r.value for r in res])
    pcs = np.array([r.per_class for r in res])
    with np.errstate(invalid="ignore"):
        mean_pc = [None if np.isnan(pcs[:, c]).all() else float(np.nanmean(pcs[:, c])) for c in range(len(d.classes))]
    return {
        "mean": float(values.mean()),
        "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
        "per_class": dict(zip(d.classes, mean_pc, strict=False)),
        "chosen_C": [r.C for r in res],
        "splits": [{"index": r.index, "value": r.value, "C": r.C,
                    "val": dict(zip(map(str, sorted(cfg.c_grid)), r.val_scores, strict=False)),
                    "per_class": class_values(d.classes, r.per_class),
                    "counts": {"train": len(s.train), "val": len(s.val), "test": len(s.test)}}
                   for r, s in zip(res, splits, strict=False)],
        "split_params": meta,
        "solver": res[0].solver,
        "outputs": {"decisions": "decisions/split<k>.csv", "splits": "splits.json"},
    }
