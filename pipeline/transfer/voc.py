"""PASCAL VOC classification (paper Appendix B): VOC-2007 / VOC-2012 images (Table 11, mAP on the devkit's
test set) and VOC-2012 actions (Table 12, AP over persons, image and box descriptors stacked).

Images or persons from the devkit's lists (:mod:`pipeline.sources.voc`, :mod:`pipeline.sources.voc_action`),
the test stores or a seeded hold-out (docs/transfer.md); the SVMs and AP: :func:`voc_protocol`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.errors import UserError
from pipeline.io import atomic_write_text
from pipeline.sources.voc import VOCSource
from pipeline.sources.voc_action import VOCActionSource, split_person_key
from pipeline.transfer.metrics import voc_map
from pipeline.transfer.report import class_values, write_csv, write_voc_results
from pipeline.transfer.svm import best_index, fit_grid, linear_decisions

if TYPE_CHECKING:
    from pipeline.transfer.run import TransferContext

__all__ = ["VocSplit", "VocResult", "voc_protocol", "evaluate_voc", "score_one_test_set", "UNSCORED",
           "evaluate_action", "hold_out_by_image"]


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
    decisions: np.ndarray
    solver: str


def voc_protocol(X: np.ndarray, gt: np.ndarray, rows: VocSplit, Cs: list[float], metric: str = "voc07", *,
                 solver: str = "auto", c_per_class: bool = False) -> VocResult:
    """VOC classification of (N, D) descriptors with (N, C) 1/-1/0 labels ``gt``: C chosen on ``rows.val``
    (by mAP, or per class), SVMs refit on ``rows.train``, AP (``metric``: voc07 or voc10) on ``rows.test``."""
    Cs = sorted(float(c) for c in Cs)
    n_classes = gt.shape[1]
    fit, val, train, test = rows.fit, rows.val, rows.train, rows.test
    coef, icpt, used = fit_grid(X[fit], gt[fit], Cs, solver)
    val_aps = np.array([voc_map(linear_decisions(X[val], coef[j], icpt[j]), gt[val], metric)[1]
                        for j in range(len(Cs))])
    with np.errstate(invalid="ignore"):
        val_means = [float(np.nanmean(r)) if not np.isnan(r).all() else float("nan") for r in val_aps]
    if c_per_class:
        chosen = [Cs[best_index(list(val_aps[:, c]))] for c in range(n_classes)]
    else:
        chosen = [Cs[best_index(val_means)]] * n_classes
    scores = np.full((len(test), n_classes), np.nan)
    have = test >= 0
    for C in sorted(set(chosen)):
        cols = [c for c in range(n_classes) if chosen[c] == C]
        coef, icpt, used = fit_grid(X[train], gt[train][:, cols], [C], solver)
        scores[np.ix_(have, cols)] = linear_decisions(X[test[have]], coef[0], icpt[0])
    mean, aps = voc_map(scores, rows.test_gt, metric)
    return VocResult(mean=mean, per_class=aps, C=chosen, val_scores=val_means, decisions=scores, solver=used)


def _lists(ctx: TransferContext) -> VOCSource | None:
    """The devkit's lists: ``voc_sets``, else those of the data the store was extracted from (if there)."""
    if ctx.cfg.voc_sets:
        return VOCSource(ctx.cfg.voc_sets)
    data_path = (ctx.d.stores[0].get("data") or {}).get("path")
    if data_path and Path(data_path).exists():
        try:
            return VOCSource(data_path)
        except UserError:
            return None
    return None


def _sets(src: VOCSource | None) -> dict[str, list[str]]:
    """Image ids of each of train, val, trainval (train + val when not listed) and test the devkit lists."""
    sets = {s: src.image_ids(s) for s in ("train", "val", "trainval", "test") if s in src.splits()} if src else {}
    if "trainval" not in sets and "train" in sets and "val" in sets:
        sets["trainval"] = sets["train"] + sets["val"]
    return sets


def _rows(ids: list[str], index: dict[str, int]) -> np.ndarray:
    return np.array([index[i] for i in ids if i in index], dtype=np.int64)


def _test_images(ctx: TransferContext, sets: dict[str, list[str]], src: VOCSource | None,
                 index: dict[str, int]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The scored images in the devkit's order: (ids, store rows or -1, ground truth; the devkit's for rows -1)."""
    d, ev, test_start = ctx.d, ctx.cfg.voc_test_split, ctx.test_start
    if ev in sets:  # the devkit's order (ties, and images without a score, keep it)
        test_ids = list(sets[ev])
        if test_start is not None:
            listed = set(test_ids)
            test_ids += [i for i in d.ids[test_start:] if i not in listed]
    elif test_start is not None:
        test_ids = list(d.ids[test_start:])
    else:
        raise UserError(f"the VOC protocol needs the {ev} images: give their store (test_stores / --test) or the "
                        "devkit's lists (voc_sets / --voc-sets)")
    test_rows = np.array([index.get(i, -1) for i in test_ids], dtype=np.int64)
    test_gt = np.zeros((len(test_ids), len(d.classes)), dtype=np.int8)
    test_gt[test_rows >= 0] = d.labels[test_rows[test_rows >= 0]]
    lost = [i for i, r in zip(test_ids, test_rows, strict=True) if r < 0]
    if lost:
        files = src.class_labels(ev, d.classes) if src else None
        if files is None:
            raise UserError(f"no per-class label files <class>_{ev}.txt for the {len(lost)} test image(s) without a "
                            f"descriptor (in {src.sets if src else 'no devkit lists'})")
        if any(i not in files for i in lost):
            raise UserError(f"test image {next(i for i in lost if i not in files)!r} has neither a descriptor nor "
                            f"labels in {src.sets}")
        test_gt[test_rows < 0] = [files[i] for i in lost]
    return test_ids, test_rows, test_gt


def score_one_test_set(ctx: TransferContext, gt: np.ndarray, rows: VocSplit, classes: list[str],
                       what: str = "images") -> tuple[VocResult, dict[str, Any]]:
    """The SVMs of a protocol with one test set (VOC, VOC action) and the part of ``transfer.json`` they make."""
    cfg = ctx.cfg
    if len(rows.train) == 0 or len(rows.fit) == 0 or (len(rows.val) == 0 and len(cfg.c_grid) > 1):
        raise UserError(f"not enough training {what} (fit {len(rows.fit)}, val {len(rows.val)}, train "
                        f"{len(rows.train)}) for the {cfg.protocol} protocol")
    r = voc_protocol(ctx.d.X, gt, rows, cfg.c_grid, ctx.protocol.ap, solver=cfg.solver, c_per_class=cfg.c_per_class)
    per_class = class_values(classes, r.per_class)
    many = cfg.c_per_class
    counts = {"fit": len(rows.fit), "val": len(rows.val), "train": len(rows.train), "test": len(rows.test)}
    return r, {
        "mean": r.mean, "std": None, "per_class": per_class,
        "chosen_C": dict(zip(classes, r.C, strict=False)) if many else r.C[0],
        "splits": [{"index": 0, "value": r.mean, "C": None if many else r.C[0],
                    "val": dict(zip(map(str, sorted(cfg.c_grid)), r.val_scores, strict=False)), "counts": counts}],
        "skipped_classes": [c for c, v in per_class.items() if v is None],
    }


def evaluate_voc(ctx: TransferContext) -> dict[str, Any]:
    """VOC classification on the context's descriptors; returns the body of ``transfer.json``."""
    cfg, d = ctx.cfg, ctx.d
    if d.label_kind != "multi":
        raise UserError("the VOC protocols need multi-label stores (an N x C matrix of 1/-1/0); "
                        "use caltech101, caltech256 or generic for single-label stores")
    src = _lists(ctx)
    sets = _sets(src)
    index = {k: i for i, k in enumerate(d.ids)}
    ev = cfg.voc_test_split
    test_ids, test_rows, test_gt = _test_images(ctx, sets, src, index)
    if not (test_gt > 0).any():
        raise UserError(f"no class has a positive image among the {len(test_ids)} {ev} images; "
                        "VOC2012 test labels are not public: score val instead (voc_test_split=val)")
    skipped: dict[str, int] = {"test_without_descriptor": int((test_rows < 0).sum())}
    train_name = "trainval" if ev == "test" else "train"
    pool = set(range(ctx.test_start if ctx.test_start is not None else len(d.ids))) - set(test_rows.tolist())
    if train_name in sets:
        skipped["train_without_descriptor"] = sum(i not in index for i in sets[train_name])
        train = np.array([r for r in _rows(sets[train_name], index) if r in pool], dtype=np.int64)
    else:
        train = np.array(sorted(pool), dtype=np.int64)
    if ev == "test" and "train" in sets and "val" in sets:
        fit, val = (np.intersect1d(_rows(sets[s], index), train) for s in ("train", "val"))
        c_from = "val"
    else:
        perm = train[np.random.default_rng(cfg.seed).permutation(len(train))]
        n_val = int(round(len(train) * cfg.val_fraction))
        val, fit = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        c_from = f"seeded {cfg.val_fraction:.0%} hold-out of {train_name}"
    r, body = score_one_test_set(ctx, d.labels, VocSplit(fit, val, train, test_rows, test_gt), d.classes)
    dec_dir = ctx.out / "decisions"
    write_csv(dec_dir / "test.csv", ["id"] + [f"label_{c}" for c in d.classes] + [f"score_{c}" for c in d.classes],
              [[i, *map(int, g), *map(float, s)] for i, g, s in zip(test_ids, test_gt, r.decisions, strict=False)])
    devkit = write_voc_results(dec_dir, test_ids, d.classes, r.decisions)
    renamed = any(f"comp1_cls_test_{c}.txt" != v for c, v in devkit.items())
    return {
        **body, "c_chosen_on": c_from, "voc_sets": str(src.sets) if src else None, "solver": r.solver,
        "skipped": skipped,
        "outputs": {"decisions": "decisions/test.csv", "devkit": "decisions/comp1_cls_test_<class>.txt",
                    **({"devkit_files": devkit} if renamed else {})},
    }


#: actions the devkit does not score
UNSCORED = ("other",)


def hold_out_by_image(rows: np.ndarray, images: np.ndarray, fraction: float,
                      seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, val) rows: a seeded ``fraction`` of the distinct images of ``rows`` (with all their persons) is val."""
    names = np.unique(images[rows])
    picked = set(names[np.random.default_rng(seed).permutation(len(names))[:int(round(len(names) * fraction))]])
    is_val = np.array([images[r] in picked for r in rows], dtype=bool)
    return np.sort(rows[~is_val]), np.sort(rows[is_val])


@dataclass
class _Persons(VocSplit):
    """The protocol's rows, the scored persons' keys, the scored split and how C is chosen."""

    test_ids: list[str]
    split: str
    how: str


def _source(ctx: TransferContext) -> VOCActionSource:
    path = ctx.cfg.voc_sets or (ctx.d.stores[0].get("data") or {}).get("path")
    if not path or not Path(path).exists():
        raise UserError("voc12-action needs the persons to score: a test store (--test) or the dataset's "
                        "action lists (--voc-sets VOCdevkit)")
    return VOCActionSource(path)


def _persons(ctx: TransferContext, images: np.ndarray) -> _Persons:
    cfg, d = ctx.cfg, ctx.d
    if ctx.test_start is not None:
        pool, test = np.arange(ctx.test_start), np.arange(ctx.test_start, len(d.ids))
        fit, val = hold_out_by_image(pool, images, cfg.val_fraction, cfg.seed)
        return _Persons(fit, val, pool, test, d.labels[test], list(d.ids[ctx.test_start:]), "test",
                        f"seeded {cfg.val_fraction:.0%} of the training store's images")
    index = {k: i for i, k in enumerate(d.ids)}
    src = _source(ctx)
    ev = cfg.voc_test_split
    if ev not in src.splits() and ev == "test" and "val" in src.splits():
        ev = "val"  # VOC 2012: the test labels are not public
    tests = list(src.records(ev))
    test_ids = [r.key for r in tests]
    test = np.array([index.get(k, -1) for k in test_ids], dtype=np.int64)
    test_gt = np.array([r.labels for r in tests], dtype=np.int8).reshape(len(tests), len(d.classes))
    if src.classes != d.classes:
        raise UserError(f"the store's actions {d.classes} are not the dataset's {src.classes}")
    train_split = "trainval" if ev == "test" else "train"
    if train_split not in src.splits():
        raise UserError(f"{src.dir}: no action list {train_split}.txt to train on")

    def rows_of(split: str) -> np.ndarray:
        return np.array(sorted(index[r.key] for r in src.records(split) if r.key in index), dtype=np.int64)

    train = np.setdiff1d(rows_of(train_split), test)
    if ev == "test" and {"train", "val"} <= set(src.splits()):
        fit, val = np.intersect1d(rows_of("train"), train), np.intersect1d(rows_of("val"), train)
        how = "val"
    else:
        fit, val = hold_out_by_image(train, images, cfg.val_fraction, cfg.seed)
        how = f"seeded {cfg.val_fraction:.0%} of the {train_split} images"
    return _Persons(fit, val, train, test, test_gt, test_ids, ev, how)


def evaluate_action(ctx: TransferContext) -> dict[str, Any]:
    """The VOC-2012 action protocol on per-person descriptors; returns the body of ``transfer.json``."""
    d = ctx.d
    if d.label_kind != "multi":
        raise UserError("voc12-action needs a voc-action store (persons with 1/-1 labels per action)")
    images = np.array([split_person_key(k)[0] for k in d.ids])
    p = _persons(ctx, images)
    cols = [c for c, name in enumerate(d.classes) if name not in UNSCORED]
    scored = [d.classes[c] for c in cols]
    p.test_gt = p.test_gt[:, cols]
    if not (p.test_gt > 0).any():
        raise UserError(f"no action has a positive person among the {len(p.test_ids)} {p.split} persons")
    r, body = score_one_test_set(ctx, np.asarray(d.labels, dtype=np.int8)[:, cols], p, scored, "persons")
    keys = [split_person_key(k) for k in p.test_ids]
    dec = ctx.out / "decisions"
    header = ["id", "image", "person"] + [f"label_{a}" for a in scored] + [f"score_{a}" for a in scored]
    rows = zip(p.test_ids, keys, p.test_gt, r.decisions, strict=False)
    write_csv(dec / "test.csv", header, [[k, img, n, *map(int, g), *map(float, s)] for k, (img, n), g, s in rows])
    for j, a in enumerate(scored):  # the devkit's results files ("comp10": outside training data used)
        scores = zip(keys, r.decisions[:, j], strict=False)
        lines = [f"{img} {n} {s:.9g}\n" for (img, n), s in scores if not np.isnan(s)]
        atomic_write_text(dec / f"comp10_action_{p.split}_{a}.txt", "".join(lines))
    skipped_classes, splits = body.pop("skipped_classes"), body.pop("splits")
    return {
        **body, "rows": len(p.test_ids), "images": len({img for img, _ in keys}), "scored_split": p.split,
        "unscored_classes": [c for c in d.classes if c in UNSCORED], "skipped_classes": skipped_classes,
        "splits": splits, "c_chosen_on": p.how, "solver": r.solver,
        "skipped": {"test_without_descriptor": int((p.test < 0).sum())},
        "outputs": {"decisions": "decisions/test.csv", "devkit": f"decisions/comp10_action_{p.split}_<action>.txt"},
    }
