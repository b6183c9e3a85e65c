"""VOC-2012 action classification (paper Appendix B, Table 12): one linear SVM per action, AP over persons.

Rows are persons (a ``voc-action`` store extracted with ``--boxes``: image and box descriptors
stacked); persons from the test stores or the lists of :class:`~pipeline.sources.voc_action.VOCActionSource`
(docs/transfer.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.errors import UserError
from pipeline.io import atomic_write_text
from pipeline.sources.voc_action import VOCActionSource, split_person_key
from pipeline.transfer.report import write_csv
from pipeline.transfer.voc import VocSplit, score_one_test_set

if TYPE_CHECKING:
    from pipeline.transfer.run import TransferContext

__all__ = ["UNSCORED", "evaluate_action", "hold_out_by_image"]

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
