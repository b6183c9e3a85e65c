"""Fashion-MNIST as users' data is laid out: an ImageFolder tree of PNG files (data/README.md). The last 5,000
official test images (``HELD_OUT``) are left for the derived transfer and localisation sets, so they never overlap
the classifier's data."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.errors import UserError
from pipeline.shipped import DATA_DIR, prepared_tree

__all__ = ["CLASSES", "read_idx", "load_split", "load_held_out", "prepare_fashion_mnist", "prepare_fashion_mnist_test",
           "HELD_OUT"]

#: label index -> class folder name (folders sort in a different order; index = sorted rank).
CLASSES = ["tshirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot"]
RAW = DATA_DIR / "fashion-mnist"
VAL_POOL = slice(0, 5000)
HELD_OUT = slice(5000, 10000)


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a (gzipped) IDX file into a numpy array."""
    data = gzip.decompress(Path(path).read_bytes())
    zero, dtype_code, ndim = data[0:2], data[2], data[3]
    if zero != b"\x00\x00" or dtype_code != 0x08:
        raise UserError(f"{path}: not an unsigned-byte IDX file")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_split(split: str, raw: Path = RAW) -> tuple[np.ndarray, np.ndarray]:
    """(images N x 28 x 28 uint8, labels N) of the official ``train`` or ``t10k`` file."""
    return read_idx(raw / f"{split}-images-idx3-ubyte.gz"), read_idx(raw / f"{split}-labels-idx1-ubyte.gz")


def load_held_out() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 held-out test images and labels (``HELD_OUT``) the derived transfer and localisation sets use."""
    x, y = load_split("t10k")
    return x[HELD_OUT], y[HELD_OUT]


def _per_class(labels: np.ndarray, n: int | None, last: bool = False) -> np.ndarray:
    """The first (or ``last``) ``n`` indices of each class (None: all), in file order."""
    idx = [np.flatnonzero(labels == c)[slice(-n, None) if last else slice(n)] for c in range(len(CLASSES))]
    return np.sort(np.concatenate(idx))


def _write_split(tmp: Path, split: str, xs: np.ndarray, ys: np.ndarray, idx: np.ndarray, prefix: str) -> None:
    for c in CLASSES:
        (tmp / split / c).mkdir(parents=True, exist_ok=True)
    for i in idx:
        Image.fromarray(xs[i], "L").save(tmp / split / CLASSES[ys[i]] / f"{prefix}_{i:05d}.png", optimize=False)


def prepare_fashion_mnist(out: str | os.PathLike[str], train_per_class: int = 1000, val_per_class: int = 200) -> Path:
    """Write the ImageFolder tree under ``out`` and return ``out`` (once, atomically: :func:`prepared_tree`):
    ``train``: the first ``train_per_class`` images of each class of the official training file (in file order);
    ``val``: the first ``val_per_class`` of each class among the first 5,000 official test images."""
    params = {"dataset": "fashion-mnist", "train_per_class": train_per_class, "val_per_class": val_per_class}
    if val_per_class * len(CLASSES) > (VAL_POOL.stop - VAL_POOL.start) * 0.9:
        raise UserError(f"val_per_class={val_per_class} is too many for the 5000-image validation pool")

    def build(tmp: Path) -> None:
        x_tr, y_tr = load_split("train")
        x_te, y_te = load_split("t10k")
        x_val, y_val = x_te[VAL_POOL], y_te[VAL_POOL]
        _write_split(tmp, "train", x_tr, y_tr, _per_class(y_tr, train_per_class), "train")
        _write_split(tmp, "val", x_val, y_val, _per_class(y_val, val_per_class), "test")

    return prepared_tree(out, params, build)


def prepare_fashion_mnist_test(out: str | os.PathLike[str], train_per_class: int = 5500, val_per_class: int = 500,
                               test_per_class: int | None = None) -> Path:
    """The reproduction's layout: train / val / test with a test split never used for training or schedules.

    ``train``: the first ``train_per_class`` images of each class of the official training file; ``val``
    (the plateau schedule's split): the last ``val_per_class`` of each class of the same file; ``test``:
    the first ``test_per_class`` of each class of the official test file (None: all 10,000).
    """
    params = {"dataset": "fashion-mnist-test", "train_per_class": train_per_class, "val_per_class": val_per_class,
              "test_per_class": test_per_class}
    if train_per_class + val_per_class > 6000:
        raise UserError(f"train_per_class + val_per_class = {train_per_class + val_per_class}: the training file "
                        "has 6,000 images per class")

    def build(tmp: Path) -> None:
        x_tr, y_tr = load_split("train")
        x_te, y_te = load_split("t10k")
        _write_split(tmp, "train", x_tr, y_tr, _per_class(y_tr, train_per_class), "train")
        _write_split(tmp, "val", x_tr, y_tr, _per_class(y_tr, val_per_class, last=True), "train")
        _write_split(tmp, "test", x_te, y_te, _per_class(y_te, test_per_class), "test")

    return prepared_tree(out, params, build)
