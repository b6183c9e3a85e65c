"""The random splits of the Caltech-101/256 protocols (paper Appendix B; docs/formats.md 3.4), drawn per class
and saved as ids, so a saved split reloads against any store of the same images."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from pipeline.errors import UserError
from pipeline.io import atomic_write_json, read_json

__all__ = ["Split", "make_splits", "save_splits", "load_splits"]

SPLITS_FORMAT = "vgg-transfer-splits/1"


@dataclass(frozen=True)
class Split:
    """Row indices of one split: ``val`` is part of ``train``; ``test`` is disjoint from both."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    @property
    def fit(self) -> np.ndarray:
        """The training rows that are not validation rows."""
        return np.setdiff1d(self.train, self.val)


def make_splits(labels: np.ndarray, classes: list[str], train_per_class: int | None, test_per_class: int | None,
                n_splits: int = 3, seed: int = 0, val_fraction: float = 0.2,
                test_labels: np.ndarray | None = None) -> list[Split]:
    """``n_splits`` seeded per-class splits of (N,) class indices ``labels`` (-1: never used), split ``k``
    drawn with ``default_rng([seed, k])``, indices sorted.

    Per class: ``train_per_class`` training images (None: all, only with ``test_labels``), at most
    ``test_per_class`` test images (None: all the rest), ``val_fraction`` of the training images
    (rounded) to choose C. ``test_labels``: a separate test set, its rows numbered after ``labels``'.
    Raises UserError for a class with too few images (``classes`` names it).
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
        more = f" (and {len(short) - 5} more)" if len(short) > 5 else ""
        shown = ", ".join(f"{name!r} has {n}" for name, n in short[:5]) + more
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
        out.append(Split(train=train, val=val, test=test))
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
    """(splits, their saved parameters) of a :func:`save_splits` file, as rows of ``ids`` (holding every saved id)."""
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
        out.append(Split(**parts))
    meta = {k: v for k, v in data.items() if k not in ("format", "splits")}
    return out, meta
