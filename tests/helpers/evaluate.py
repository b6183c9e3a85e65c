"""Helpers for the evaluate tests: small real-image datasets and small nets saved as checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipeline.models import build_model, init_weights, save_checkpoint
from pipeline.shipped.fashion_mnist import CLASSES, load_split

SMALL = dict(config="A", width=0.125, crop=32, fc_width=64, num_classes=10)
NORM = {"mean": [72.9, 72.9, 72.9], "std": [90.0, 90.0, 90.0]}


def make_checkpoint(path: Path, seed: int = 0, train_scale: dict | None = None, classes: list[str] | None = None,
                    **model) -> Path:
    """A small net saved with its meta. Glorot init, with the last layer scaled up so the
    posteriors are far from uniform (an untrained net otherwise gives ~1/C for every class)."""
    net = init_weights(build_model(**{**SMALL, **model}), "glorot", seed=seed)
    with torch.no_grad():
        net.classifier[6].weight.mul_(200.0)
    meta = {"normalization": NORM, "train_scale": train_scale or {"s_min": 40, "s_max": 40},
            "classes": classes if classes is not None else sorted(CLASSES)[:net.cfg.num_classes]}
    return save_checkpoint(path, net, meta=meta)


def make_imagefolder(root: Path, photos: list[np.ndarray], per_class: int = 1, fm_classes: int = 6,
                     broken: bool = True) -> Path:
    """ImageFolder ``root/val/<class>/`` (all 10 Fashion-MNIST classes) holding Fashion-MNIST PNGs
    (28x28 grey) of the first ``fm_classes`` classes and five cut-outs of the scikit-learn photos
    with different aspect ratios (so images rescale to different sizes), plus one file that is not
    an image."""
    x, y = load_split("t10k")
    for c, name in enumerate(CLASSES):
        d = root / "val" / name
        d.mkdir(parents=True, exist_ok=True)
        for j, i in enumerate(np.flatnonzero(y == c)[:per_class if c < fm_classes else 0]):
            Image.fromarray(x[i], "L").save(d / f"fm_{j}.png")
    cuts = [(0, 0, 640, 427), (100, 50, 400, 350), (0, 0, 200, 400), (200, 100, 550, 220), (300, 200, 420, 300)]
    for k, (l, t, r, b) in enumerate(cuts):
        img = Image.fromarray(photos[k % 2][t:b, l:r])
        img.save(root / "val" / sorted(CLASSES)[k] / f"photo_{k}.jpg", quality=92)
    if broken:
        (root / "val" / sorted(CLASSES)[0] / "broken.jpg").write_bytes(b"this is not a JPEG file")
    return root
