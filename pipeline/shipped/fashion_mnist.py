"""Fashion-MNIST as users' data is laid out: an ImageFolder tree of PNG files.

``train/<class>/<split>_<index>.png`` takes the first ``train_per_class`` images of each class of the
official training file (in file order); ``val/<class>/...`` the first ``val_per_class`` of each class
among the first 5,000 official test images. The last 5,000 test images (``HELD_OUT``) are left for
the derived transfer and localisation sets, so they never overlap the classifier's data.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.errors import UserError
from pipeline.shipped import DATA_DIR, prepared_tree

__all__ = ["CLASSES", "read_idx", "load_split", "prepare_fashion_mnist", "HELD_OUT"]

#: label index -> class folder name (folders sort in a different order; index = sorted rank).
CLASSES = ["tshirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot"]
RAW = DATA_DIR / "fashion-mnist"
VAL_POOL = slice(0, 5000)
HELD_OUT = slice(5000, 10000)


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a (gzipped) IDX file into a numpy array."""
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    zero, dtype_code, ndim = data[0:2], data[2], data[3]
    if zero != b"\x00\x00" or dtype_code != 0x08:
        raise UserError(f"{path}: not an unsigned-byte IDX file")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_split(split: str, raw: Path = RAW) -> tuple[np.ndarray, np.ndarray]:
    """(images N x 28 x 28 uint8, labels N) of the official ``train`` or ``t10k`` file."""
    return read_idx(raw / f"{split}-images-idx3-ubyte.gz"), read_idx(raw / f"{split}-labels-idx1-ubyte.gz")


def _first_per_class(labels: np.ndarray, n: int) -> np.ndarray:
    idx = [np.flatnonzero(labels == c)[:n] for c in range(len(CLASSES))]
    return np.sort(np.concatenate(idx))


def prepare_fashion_mnist(out: str | os.PathLike[str], train_per_class: int = 1000, val_per_class: int = 200) -> Path:
    """Write the ImageFolder tree under ``out`` (idempotent: a finished tree is reused).

    Returns:
        ``out``. The tree is built in a temporary sibling folder and renamed into place. A
        ``.prepared.json`` marker records the parameters; a tree prepared with other
        parameters is refused rather than silently mixed.
    """
    params = {"dataset": "fashion-mnist", "train_per_class": train_per_class, "val_per_class": val_per_class}
    if val_per_class * len(CLASSES) > (VAL_POOL.stop - VAL_POOL.start) * 0.9:
        raise UserError(f"val_per_class={val_per_class} is too many for the 5000-image validation pool")

    def build(tmp: Path) -> None:
        x_tr, y_tr = load_split("train")
        x_te, y_te = load_split("t10k")
        x_val, y_val = x_te[VAL_POOL], y_te[VAL_POOL]
        for split, xs, ys, n, prefix in (("train", x_tr, y_tr, train_per_class, "train"),
                                         ("val", x_val, y_val, val_per_class, "test")):
            for c in CLASSES:
                (tmp / split / c).mkdir(parents=True, exist_ok=True)
            for i in _first_per_class(ys, n):
                Image.fromarray(xs[i], "L").save(tmp / split / CLASSES[ys[i]] / f"{prefix}_{i:05d}.png",
                                                 optimize=False)

    return prepared_tree(out, params, build)
