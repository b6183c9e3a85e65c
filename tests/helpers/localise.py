"""Builders for the localisation tests: real VOC-format trees (JPEGs + XML) and small nets.

The VOC tree is built with the shipped mosaic composer (Fashion-MNIST objects on a canvas, tight
boxes) but named with PASCAL VOC class names, so the project's VOC reader reads it as it reads
VOC 2007. Nets are tiny (config A at width 1/8, 32-pixel crops): the tests check the plumbing
against independent computations, not accuracy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.models import build_model, init_weights, save_checkpoint
from pipeline.shipped.fashion_mnist import HELD_OUT, load_split
from pipeline.shipped.voc_mosaics import compose_mosaic, mosaic_xml
from pipeline.sources.voc import VOC_CLASSES

TINY = dict(config="A", width=0.125, fc_width=16, crop=32, dropout=0.0)
#: the Fashion-MNIST label of each object -> a VOC class name
NAMES = {i: VOC_CLASSES[i] for i in range(10)}


def write_voc_tree(root: Path, n: int, canvas: int = 64, seed: int = 0, splits=("train", "val")) -> Path:
    """A VOCdevkit/VOC2007 tree of ``n`` mosaics per split (1-4 objects, boxes in 1-based XML)."""
    x, y = load_split("t10k")
    x, y = x[HELD_OUT], y[HELD_OUT]
    rng = np.random.default_rng(seed)
    voc = root / "VOCdevkit" / "VOC2007"
    for d in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (voc / d).mkdir(parents=True, exist_ok=True)
    start = 0
    for split in splits:
        ids = []
        for j in range(n):
            k = int(rng.integers(1, 5))
            pick = list(range(start, start + k))
            start += k
            arr, boxes = compose_mosaic([x[i] for i in pick], rng, canvas)
            objects = [dict(b, name=NAMES[int(y[i])]) for b, i in zip(boxes, pick, strict=False)]
            image_id = f"{split}{j:04d}"
            Image.fromarray(arr, "L").convert("RGB").save(voc / "JPEGImages" / f"{image_id}.jpg", quality=95)
            (voc / "Annotations" / f"{image_id}.xml").write_bytes(mosaic_xml(image_id, canvas, objects))
            ids.append(image_id)
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    return root


def save_classifier(path: Path, classes: list[str], seed: int = 0, s: int = 64, **over) -> Path:
    """A randomly initialised small classification checkpoint with the meta the stages read."""
    model = init_weights(build_model(**{**TINY, "num_classes": len(classes), **over}), "glorot", seed=seed)
    save_checkpoint(path, model, meta={"classes": list(classes), "train_scale": {"s_min": s, "s_max": s},
                                       "normalization": {"mean": [40.0] * 3, "std": [50.0] * 3}})
    return path
