"""Helpers shared by the extract tests: small-net checkpoints and store comparison."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from pipeline.models import build_model, init_weights, save_checkpoint

#: a small net: config A at width 1/8, crop 32, FC 64 (two CPU cores describe ~100 images/s)
SMALL = dict(config="A", width=0.125, crop=32, fc_width=64, num_classes=10)
NORM = {"mean": [72.9, 72.9, 72.9], "std": [90.0, 90.0, 90.0]}  # Fashion-MNIST-like, 0-255 scale
SCALES = [32, 48, 64]
VOC_OBJECTS = {  # image id -> (photo index, crop box in the photo, objects: name, box (1-based inclusive), difficult)
    "000001": (0, (0, 0, 320, 240), [("cat", (20, 30, 200, 220), False)]),
    "000002": (1, (100, 50, 400, 400), [("dog", (10, 10, 120, 90), True)]),
    "000003": (1, (0, 0, 640, 427), [("cat", (300, 100, 600, 400), False), ("dog", (5, 5, 200, 150), False)]),
}


def make_checkpoint(path: Path, seed: int = 0, **over) -> Path:
    model = build_model(**{**SMALL, **over})
    init_weights(model, "glorot", seed=seed)
    save_checkpoint(path, model, meta={"normalization": NORM, "train_scale": {"s_min": 32, "s_max": 64}})
    return path


def store_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every dataset of a store (the data, not the provenance), for equality checks."""
    import h5py

    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = obj.asstr()[:] if obj.dtype.kind == "O" else obj[:]
        f.visititems(visit)
        assert bool(f.attrs["complete"])
    return out


def assert_same_store(a: Path, b: Path) -> None:
    x, y = store_arrays(a), store_arrays(b)
    assert sorted(x) == sorted(y)
    for k in x:
        assert x[k].dtype == y[k].dtype, k
        np.testing.assert_array_equal(x[k], y[k], err_msg=k)


@contextmanager
def threads(n: int) -> Iterator[None]:
    """Run torch with ``n`` intra-op threads (floating-point summation order depends on it)."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
