"""Training / validation / test splits of the transfer protocols (paper Appendix B).

* Caltech-101: 3 random splits, 30 training images per class and up to 50 test images per class
  (test = min(50, rest)); Caltech-256: 3 splits, 60 training images per class and the rest for
  test; in each split 20% of the training images (per class, rounded) form a validation set that
  chooses the SVM's C, after which the SVM is refit on all training images (docs/formats.md section 3).
* Generic: the same procedure with any training / test counts per class.
* PASCAL VOC: the devkit's own lists, ``ImageSets/Main/{train,val,trainval,test}.txt``.

Splits are drawn per class from ``numpy.random.default_rng([seed, split_index])`` over the images
of the class in store order, so they depend only on the seed, the ids and the labels. They are
saved as ids (not row numbers), so a saved split reloads against any store of the same images.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import UserError
from pipeline.io import atomic_write_json, read_json
from pipeline.transfer.report import file_part

__all__ = ["Split", "PROTOCOL_COUNTS", "make_splits", "save_splits", "load_splits", "find_voc_sets",
           "read_voc_sets", "read_voc_class_labels"]

#: protocol -> (training images per class, test images per class or None for "all the rest")
PROTOCOL_COUNTS: dict[str, tuple[int, int | None]] = {"caltech101": (30, 50), "caltech256": (60, None)}
SPLITS_FORMAT = "vgg-transfer-splits/1"


@dataclass(frozen=True)
class Split:
    """Row indices of one split. ``fit`` + ``val`` = ``train`` (disjoint); ``test`` is disjoint from both."""

    train: np.ndarray
    val: np.ndarray
    fit: np.ndarray
    test: np.ndarray


def make_splits(
    labels: np.ndarray,
    classes: list[str],
    train_per_class: int | None,
    test_per_class: int | None,
    n_splits: int = 3,
    seed: int = 0,
    val_fraction: float = 0.2,
    test_labels: np.ndarray | None = None,
) -> list[Split]:
    """Draw ``n_splits`` seeded per-class splits.

    Args:
        labels: (N,) class indices (-1 = unknown: such images are never used).
        classes: class names (for error messages).
        train_per_class: training images per class; None = all of them (only with ``test_labels``).
        test_per_class: test images per class (at most; fewer when a class has fewer left), or
            None for all the remaining images.
        n_splits: number of random splits.
        seed: base seed; split ``k`` uses ``default_rng([seed, k])``.
        val_fraction: share of each class's training images held out to choose C (rounded).
        test_labels: labels of a separate test set; its rows are numbered after ``labels``' rows
            (row ``len(labels) + j``), and the test images are drawn from it instead.
    Returns:
        One :class:`Split` per split, indices sorted ascending.
    Raises:
        UserError: a class with too few images for the requested counts.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or (test_labels is not None and np.asarray(test_labels).ndim != 1):
        raise UserError("these splits need one class label per image; multi-label stores use the VOC protocols")
    if train_per_class is None and test_labels is None:
        raise UserError("train_per_class is needed when the test images come from the same store")
    if train_per_class is not None and train_per_class < 1:
        raise UserError(f"train_per_class must be at least 1 (got {train_per_class})")
    if test_per_class is not None and test_per_class < 1:
        raise UserError(f"test_per_class must be at least 1 (got {test_per_class})")
    if not 0 <= val_fraction < 1:
        raise UserError(f"val_fraction must be in [0, 1), got {val_fraction}")
    per_class = [np.flatnonzero(labels == c) for c in range(len(classes))]
    need = (train_per_class or 1) + (1 if test_labels is None else 0)
    short = [(classes[c], len(ix)) for c, ix in enumerate(per_class) if len(ix) < need]
    if short:
        shown = ", ".join(f"{name!r} has {n}" for name, n in short[:5]) + (
            f" (and {len(short) - 5} more)" if len(short) > 5 else ""
        )
        what = f"{train_per_class} training" + (" + at least 1 test" if test_labels is None else "")
        raise UserError(f"class counts too small for the split: {what} image(s) per class needed; {shown}")
    test_pool = per_class if test_labels is None else \
        [np.flatnonzero(np.asarray(test_labels) == c) + len(labels) for c in range(len(classes))]
    out = []
    for k in range(n_splits):
        rng = np.random.default_rng([seed, k])
        tr, va, te = [], [], []
        for c, ix in enumerate(per_class):
            perm = ix[rng.permutation(len(ix))]
            train = perm if train_per_class is None else perm[:train_per_class]
            if test_labels is None:
                rest = perm[len(train):]
            else:
                rest = test_pool[c][rng.permutation(len(test_pool[c]))]
            te.append(rest if test_per_class is None else rest[:test_per_class])
            n_val = int(round(len(train) * val_fraction))
            if val_fraction > 0 and not 1 <= n_val < len(train):
                raise UserError(f"val_fraction={val_fraction} of {len(train)} training images of class {classes[c]!r} "
                                f"leaves {n_val} for validation; need at least 1 and fewer than {len(train)}")
            tr.append(train)
            va.append(train[:n_val])
        train, val, test = (np.sort(np.concatenate(a)).astype(np.int64) for a in (tr, va, te))
        out.append(Split(train=train, val=val, fit=np.setdiff1d(train, val), test=test))
    return out


def save_splits(path: str | os.PathLike[str], splits: list[Split], ids: list[str], meta: dict) -> None:
    """Write the splits as image ids (JSON, atomically), with the parameters that made them."""
    ids_arr = np.asarray(ids, dtype=object)
    data = {
        "format": SPLITS_FORMAT,
        **meta,
        "splits": [{part: ids_arr[getattr(s, part)].tolist() for part in ("train", "val", "test")} for s in splits],
    }
    atomic_write_json(path, data, indent=1)


def load_splits(path: str | os.PathLike[str], ids: list[str]) -> tuple[list[Split], dict]:
    """Read splits saved by :func:`save_splits` and map them onto the rows of ``ids``.

    Returns:
        (splits, the saved parameters). Raises UserError when a saved id is not among ``ids``.
    """
    data = read_json(path)
    if not isinstance(data, dict) or data.get("format") != SPLITS_FORMAT:
        raise UserError(f"{path}: not a saved transfer split file ({SPLITS_FORMAT})")
    row = {k: i for i, k in enumerate(ids)}
    out = []
    for k, s in enumerate(data["splits"]):
        parts = {}
        for part in ("train", "val", "test"):
            missing = [i for i in s[part] if i not in row]
            if missing:
                raise UserError(
                    f"{path}: split {k} {part} names {len(missing)} image(s) not in the store, e.g. {missing[0]!r}"
                )
            parts[part] = np.sort(np.array([row[i] for i in s[part]], dtype=np.int64))
        out.append(Split(train=parts["train"], val=parts["val"], fit=np.setdiff1d(parts["train"], parts["val"]),
                         test=parts["test"]))
    meta = {k: v for k, v in data.items() if k not in ("format", "splits")}
    return out, meta


def find_voc_sets(path: str | os.PathLike[str]) -> Path:
    """The ``ImageSets/Main`` folder under ``path`` (itself, a ``VOC20xx`` folder, or ``VOCdevkit``)."""
    p = Path(path)
    cands = (
        [p, p / "ImageSets" / "Main"]
        + sorted(p.glob("VOC*/ImageSets/Main"))
        + sorted(p.glob("VOCdevkit/VOC*/ImageSets/Main"))
    )
    for c in cands:
        if c.is_dir() and any((c / f"{s}.txt").is_file() for s in ("train", "trainval", "test")):
            return c
    raise UserError(f"{p}: no VOC ImageSets/Main folder (with train.txt, val.txt, test.txt) found")


def _read_ids(f: Path) -> list[str]:
    return [line.split()[0] for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_voc_sets(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """The image ids of each of ``train``, ``val``, ``trainval``, ``test`` present under ``path``.

    ``trainval`` is derived as train + val when its file is missing.
    """
    main = find_voc_sets(path)
    sets = {
        s: _read_ids(main / f"{s}.txt") for s in ("train", "val", "trainval", "test") if (main / f"{s}.txt").is_file()
    }
    if "trainval" not in sets and "train" in sets and "val" in sets:
        sets["trainval"] = sets["train"] + sets["val"]
    return sets


def read_voc_class_labels(path: str | os.PathLike[str], classes: list[str], split: str) -> dict[str, np.ndarray]:
    """id -> (C,) 1/-1/0 labels from the per-class ``<class>_<split>.txt`` files (last token = label)."""
    main = find_voc_sets(path)
    out: dict[str, np.ndarray] = {}
    for what in [*classes, split]:
        if file_part(what) != what:  # names are never paths: no devkit file is named this way
            raise UserError(f"{main}: {what!r} cannot name a devkit file (<class>_<split>.txt); "
                            "class and split names there are letters, digits, '_', '+', '-' and '.'")
    for c, name in enumerate(classes):
        f = main / f"{name}_{split}.txt"
        if not f.is_file():
            raise UserError(f"{main}: no {f.name} (per-class labels of class {name!r} for split {split!r})")
        for line in f.read_text(encoding="utf-8").splitlines():
            tok = line.split()
            if not tok:
                continue
            row = out.setdefault(tok[0], np.full(len(classes), -1, dtype=np.int8))
            row[c] = int(tok[-1])
    return out
