"""VOC-2012 action classification (paper Appendix B, Table 12): one linear SVM per action, AP over persons.

"predicting an action class from a single image, given a bounding box of the person performing the
action ... computing the features on the whole image and on the provided bounding box, and stacking
them to obtain the final representation." The rows are persons (a ``voc-action`` store extracted
with ``--boxes``: each row holds the whole image's descriptor and its person's box descriptor), the
descriptor of a row is the two stacked (each aggregated over scales as configured) and L2-normalised,
and the evaluation is the devkit's ``VOCevalaction``: for every action a one-vs-rest linear SVM
scores every test person, and the AP (VOC2010+ area rule, :func:`pipeline.transfer.metrics.voc_ap`)
ranks the persons; the result is the mean AP over the actions. ``other`` is not scored (the devkit
skips it).

Which persons train and which are scored: ``test_stores`` (a store of the scored split), or else
the ``ImageSets/Action`` lists of the dataset (``voc_sets`` or the store's recorded data path):
``voc_test_split`` (``test``; ``val`` when the tree has no test list, as VOC 2012's public release)
is scored, and the SVMs train on ``train`` (scoring ``val``) or ``trainval`` (scoring ``test``). C is
chosen by validation mAP on ``val`` when ``test`` is scored, else on a seeded ``val_fraction`` of the
training *images* (all persons of an image on the same side, since they share the image descriptor).

Outputs (in the stage's ``out``): ``decisions/test.csv`` (id, image, person, labels, scores per
action) and the devkit's ``comp10_action_<split>_<action>.txt`` files (``<image> <person> <score>``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import UserError
from pipeline.io import atomic_write_text
from pipeline.sources.voc_action import VOCActionSource, split_person_key
from pipeline.transfer.descriptors import Descriptors
from pipeline.transfer.protocols import voc_protocol
from pipeline.transfer.report import write_csv

__all__ = ["UNSCORED", "action_protocol", "hold_out_by_image"]

#: actions the devkit does not score
UNSCORED = ("other",)


def hold_out_by_image(rows: np.ndarray, images: np.ndarray, fraction: float,
                      seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, val) rows: a seeded ``fraction`` of the distinct images of ``rows`` (with all their persons) is val."""
    names = np.unique(images[rows])
    picked = set(names[np.random.default_rng(seed).permutation(len(names))[:int(round(len(names) * fraction))]])
    is_val = np.array([images[r] in picked for r in rows], dtype=bool)
    return np.sort(rows[~is_val]), np.sort(rows[is_val])


def _source(cfg: Any, d: Descriptors) -> VOCActionSource:
    path = cfg.voc_sets or (d.stores[0].get("data") or {}).get("path")
    if not path or not Path(path).exists():
        raise UserError("voc12-action needs the persons to score: a test store (--test) or the dataset's "
                        "ImageSets/Action lists (--voc-sets VOCdevkit)")
    p = Path(path)
    if p.name == "Action" and p.parent.name == "ImageSets":  # --voc-sets .../ImageSets/Action
        p = p.parent.parent
    return VOCActionSource(p)


def _split_rows(cfg: Any, d: Descriptors, test_start: int | None, images: np.ndarray):
    """(fit, val, train, test rows, test ids, test gt, scored split, how C is chosen)."""
    index = {k: i for i, k in enumerate(d.ids)}
    if test_start is not None:
        pool = np.arange(test_start)
        test_ids = list(d.ids[test_start:])
        test_rows = np.arange(test_start, len(d.ids))
        fit, val = hold_out_by_image(pool, images, cfg.val_fraction, cfg.seed)
        how = f"seeded {cfg.val_fraction:.0%} of the training store's images"
        return fit, val, pool, test_rows, test_ids, d.labels[test_rows], "test", how
    src = _source(cfg, d)
    ev = cfg.voc_test_split
    if ev not in src.splits() and ev == "test" and "val" in src.splits():
        ev = "val"  # VOC 2012: the test labels are not public
    tests = list(src.records(ev))
    test_ids = [r.key for r in tests]
    test_rows = np.array([index.get(k, -1) for k in test_ids], dtype=np.int64)
    test_gt = np.array([r.labels for r in tests], dtype=np.int8).reshape(len(tests), len(d.classes))
    if src.classes != d.classes:
        raise UserError(f"the store's actions {d.classes} are not the dataset's {src.classes}")
    train_split = "trainval" if ev == "test" else "train"
    if train_split not in src.splits():
        raise UserError(f"{src.dir}: no ImageSets/Action/{train_split}.txt to train on")

    def rows_of(split: str) -> np.ndarray:
        return np.array(sorted(index[r.key] for r in src.records(split) if r.key in index), dtype=np.int64)

    train = np.setdiff1d(rows_of(train_split), test_rows)
    if ev == "test" and {"train", "val"} <= set(src.splits()):
        fit, val = np.intersect1d(rows_of("train"), train), np.intersect1d(rows_of("val"), train)
        how = "val"
    else:
        fit, val = hold_out_by_image(train, images, cfg.val_fraction, cfg.seed)
        how = f"seeded {cfg.val_fraction:.0%} of the {train_split} images"
    return fit, val, train, test_rows, test_ids, test_gt, ev, how


def action_protocol(cfg: Any, d: Descriptors, test_start: int | None, out: Path) -> dict[str, Any]:
    """Run the VOC-2012 action protocol on per-person descriptors; returns the body of ``transfer.json``.

    Args:
        cfg: the transfer stage's config (c_grid, solver, c_per_class, seed, val_fraction, voc_sets,
            voc_test_split).
        d: per-person descriptors (image and box stacked) with (N, A) 1/-1 action labels.
        test_start: first row of the test store's persons, or None (lists from the dataset).
        out: the output folder (``decisions/`` is written there).
    Returns:
        ``mean``, ``std`` (None), ``per_class`` (AP per scored action), ``rows`` (scored persons),
        ``images`` (their images), ``chosen_C``, ``splits`` and bookkeeping.
    """
    if d.label_kind != "multi":
        raise UserError("voc12-action needs a voc-action store (persons with 1/-1 labels per action)")
    images = np.array([split_person_key(k)[0] for k in d.ids])
    fit, val, train, test_rows, test_ids, test_gt, ev, how = _split_rows(cfg, d, test_start, images)
    cols = [c for c, name in enumerate(d.classes) if name not in UNSCORED]
    scored = [d.classes[c] for c in cols]
    if len(train) == 0 or len(fit) == 0 or (len(val) == 0 and len(cfg.c_grid) > 1):
        raise UserError(f"not enough training persons (fit {len(fit)}, val {len(val)}, train {len(train)}) "
                        "for the action protocol")
    if not (test_gt[:, cols] > 0).any():
        raise UserError(f"no action has a positive person among the {len(test_ids)} {ev} persons")
    gt = np.asarray(d.labels, dtype=np.int8)[:, cols]
    r = voc_protocol(d.X, gt, fit, val, train, test_rows, test_gt[:, cols], cfg.c_grid, "voc10", cfg.solver,
                     cfg.c_per_class)
    keys = [split_person_key(k) for k in test_ids]
    dec = out / "decisions"
    header = ["id", "image", "person"] + [f"label_{a}" for a in scored] + [f"score_{a}" for a in scored]
    write_csv(
        dec / "test.csv",
        header,
        [
            [k, img, p, *map(int, g), *map(float, s)]
            for k, (img, p), g, s in zip(test_ids, keys, test_gt[:, cols], r.decisions, strict=False)
        ],
    )
    for j, a in enumerate(scored):  # the devkit's results files ("comp10": outside training data used)
        lines = [
            f"{img} {p} {s:.9g}\n" for (img, p), s in zip(keys, r.decisions[:, j], strict=False) if not np.isnan(s)
        ]
        atomic_write_text(dec / f"comp10_action_{ev}_{a}.txt", "".join(lines))
    per_class = {a: (None if np.isnan(v) else float(v)) for a, v in zip(scored, r.per_class, strict=False)}
    counts = {"fit": len(fit), "val": len(val), "train": len(train), "test": len(test_ids)}
    return {
        "mean": r.mean, "std": None, "per_class": per_class,
        "chosen_C": dict(zip(scored, r.C, strict=False)) if cfg.c_per_class else r.C[0],
        "rows": len(test_ids), "images": len({img for img, _ in keys}), "scored_split": ev,
        "unscored_classes": [c for c in d.classes if c in UNSCORED],
        "skipped_classes": [a for a, v in per_class.items() if v is None],
        "splits": [{"index": 0, "value": r.mean, "C": r.C[0] if not cfg.c_per_class else None,
                    "val": dict(zip(map(str, sorted(cfg.c_grid)), r.val_scores, strict=False)), "counts": counts}],
        "c_chosen_on": how, "solver": r.solver,
        "skipped": {"test_without_descriptor": int((test_rows < 0).sum())},
        "outputs": {"decisions": "decisions/test.csv", "devkit": f"decisions/comp10_action_{ev}_<action>.txt"},
    }
