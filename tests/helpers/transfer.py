"""Feature stores for the transfer tests, written through the store's own writer (real HDF5 schema).

Descriptors come from real images (scikit-learn's digits; the VOC mosaics' JPEGs), never random
numbers: each "scale" is the image at another resolution, so avg/stack aggregation is meaningful.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.features.store import FORMAT, StoreLayout, StoreWriter, create_store


def write_store(path: Path, ids: list[str], labels: np.ndarray, classes: list[str], nets: list[list[np.ndarray]],
                scales: list[int], failed: dict[int, str] | None = None, label_kind: str | None = None,
                provenance: dict | None = None) -> Path:
    """A complete store: ``nets[i][s]`` is the (N, D_i) raw descriptor of net i at scale ``scales[s]``.

    ``failed`` maps rows to decode-failure reasons (those rows are never done).
    """
    labels = np.asarray(labels)
    kind = label_kind or ("multi" if labels.ndim == 2 else "single")
    dims = [int(blocks[0].shape[1]) for blocks in nets]
    prov = {"checkpoints": [{"model": {"config": "D", "width": 1}, "sha256": f"test{i}"} for i in range(len(nets))],
            "data": {"path": "", "kind": "test", "split": "all", "fingerprint": "x"}, **(provenance or {})}
    layout = StoreLayout(ids=list(ids), labels=labels, label_kind=kind, classes=list(classes), dims=dims,
                         scales=list(scales), provenance=prov, identity={"format": FORMAT, "test": str(path)})
    create_store(path, layout)
    w = StoreWriter(path)
    failed = failed or {}
    ok = np.array([r not in failed for r in range(len(ids))])
    descs = [np.stack(blocks, axis=1).astype(np.float32) for blocks in nets]  # N x S x D
    w.write_batch(0, descs, ok, [(r, ids[r], why) for r, why in failed.items()])
    w.finalize()
    return path


def digits_scales(images: np.ndarray) -> list[np.ndarray]:
    """Two "scales" of 8x8 digits, both 64-D: the digit itself and a 4x4 average-pooled copy upsampled."""
    x = images.reshape(len(images), 8, 8).astype(np.float32)
    coarse = x.reshape(len(x), 4, 2, 4, 2).mean(axis=(2, 4)).repeat(2, axis=1).repeat(2, axis=2)
    return [x.reshape(len(x), -1), coarse.reshape(len(x), -1)]


def digits_store(path: Path, n_per_class: int | None = None, ids_prefix: str = "d", shift: int = 0) -> Path:
    """A single-label store of scikit-learn's digits (10 classes), 2 scales of 64-D raw pixels.

    ``shift`` rolls the pixels (a second, different "net" of the same images).
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    rows = np.arange(len(d.target))
    if n_per_class is not None:
        rows = np.sort(np.concatenate([np.flatnonzero(d.target == c)[:n_per_class] for c in range(10)]))
    imgs = np.roll(d.images[rows], shift, axis=2)
    ids = [f"{ids_prefix}{i:04d}" for i in rows]
    return write_store(path, ids, d.target[rows].astype(np.int64), [str(c) for c in range(10)],
                       [digits_scales(imgs)], scales=[8, 4])


def mosaic_pixels(voc: Path, ids: list[str], size: int = 16) -> np.ndarray:
    """(N, 3 size^2) raw pixels of VOC mosaics (JPEGImages) resized to size x size."""
    return np.stack(
        [
            np.asarray(
                Image.open(voc / "JPEGImages" / f"{i}.jpg").convert("RGB").resize((size, size), Image.BILINEAR),
                dtype=np.float32,
            ).ravel()
            for i in ids
        ]
    )
