"""Held-out Fashion-MNIST images as an ILSVRC CLS-LOC localisation tree (paper Appendix A).

The layout, the images and the blacklist: data/README.md ("ILSVRC-style localisation set"). Every draw
comes from ``numpy.random.default_rng(seed)``: the same command gives the same files on every machine.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.errors import UserError
from pipeline.shipped import pascal_xml, prepared_tree
from pipeline.shipped.fashion_mnist import CLASSES, load_held_out
from pipeline.shipped.voc_mosaics import OBJECT_THRESHOLD

__all__ = ["prepare_ilsvrc_loc", "WNIDS", "BLACKLIST", "OBJECT_THRESHOLD"]

#: synthetic wnids, one per Fashion-MNIST class, sorting in label order
WNIDS = [f"n9900000{i}" for i in range(len(CLASSES))]
#: the devkit's validation blacklist file, relative to the tree's root
BLACKLIST = "ILSVRC2014_devkit/data/ILSVRC2014_clsloc_validation_blacklist.txt"
#: a validation image is blacklisted when clutter brighter than the threshold covers more than this of its box
BLACKLIST_COVER = 0.25


def _background(rng: np.random.Generator, canvas: int) -> np.ndarray:
    """Dim smooth grey levels (a bilinear 4x4 grid, 0-50) plus textured noise (std 10)."""
    coarse = rng.uniform(0, 50, size=(4, 4)).astype(np.float32)
    bg = np.array(Image.fromarray(coarse, mode="F").resize((canvas, canvas), Image.BILINEAR))
    return bg + rng.normal(0, 10, size=(canvas, canvas)).astype(np.float32)


def _fragment(item: np.ndarray, rng: np.random.Generator, canvas: int) -> tuple[np.ndarray, int, int]:
    """A random piece (10-18 px of the 28 px item), rescaled, dimmed to 35-50%, and its top-left position."""
    side = int(rng.integers(10, 19))
    y, x = (int(v) for v in rng.integers(0, 28 - side + 1, size=2))
    out = int(rng.integers(canvas // 6, canvas // 3 + 1))
    piece = Image.fromarray(item[y:y + side, x:x + side], "L").resize((out, out), Image.BILINEAR)
    arr = np.asarray(piece, dtype=np.float32) * float(rng.uniform(0.35, 0.5))
    top, left = (int(v) for v in rng.integers(-out // 2, canvas - out // 2, size=2))
    return arr, top, left


def _paste(img: np.ndarray, patch: np.ndarray, top: int, left: int) -> np.ndarray:
    """``max`` of ``img`` and ``patch`` placed at (top, left), clipped to the canvas; returns the mask of the
    canvas pixels the patch covers with values above the object threshold."""
    h, w = patch.shape
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + h, img.shape[0]), min(left + w, img.shape[1])
    mask = np.zeros(img.shape, dtype=bool)
    if y1 <= y0 or x1 <= x0:
        return mask
    sub = patch[y0 - top:y1 - top, x0 - left:x1 - left]
    img[y0:y1, x0:x1] = np.maximum(img[y0:y1, x0:x1], sub)
    mask[y0:y1, x0:x1] = sub > OBJECT_THRESHOLD
    return mask


def compose_loc_image(obj: np.ndarray, clutter: list[np.ndarray], rng: np.random.Generator, canvas: int,
                      min_scale: float, max_scale: float) -> tuple[np.ndarray, dict[str, int], float]:
    """One image: background, a dim fragment of each ``clutter`` item, then the 28x28 ``obj`` at a side of
    ``min_scale``-``max_scale`` of the canvas. Returns the uint8 image, the object's box (0-based inclusive
    ``xmin, ymin, xmax, ymax``) and the fraction of the box under bright clutter."""
    img = _background(rng, canvas)
    bright_clutter = np.zeros((canvas, canvas), dtype=bool)
    for item in clutter:
        arr, top, left = _fragment(item, rng, canvas)
        bright_clutter |= _paste(img, arr, top, left)
    side = int(rng.integers(int(round(min_scale * canvas)), int(round(max_scale * canvas)) + 1))
    top, left = (int(v) for v in rng.integers(0, canvas - side + 1, size=2))
    patch = np.asarray(Image.fromarray(obj, "L").resize((side, side), Image.BILINEAR), dtype=np.float32)
    _paste(img, patch, top, left)
    ys, xs = np.nonzero(patch > OBJECT_THRESHOLD)
    if ys.size == 0:  # an all-dark item: its box is the patch
        ys, xs = np.array([0, side - 1]), np.array([0, side - 1])
    box = {"xmin": left + int(xs.min()), "ymin": top + int(ys.min()),
           "xmax": left + int(xs.max()), "ymax": top + int(ys.max())}
    covered = float(bright_clutter[box["ymin"]:box["ymax"] + 1, box["xmin"]:box["xmax"] + 1].mean())
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), box, covered


def _assign(labels: np.ndarray, train_per_class: int, val_per_class: int) -> tuple[list[int], list[int], list[int]]:
    """Held-out indices of the validation objects, the training objects (class by class, file order) and the rest."""
    val, train = [], []
    for c in range(len(CLASSES)):
        idx = np.flatnonzero(labels == c)
        if len(idx) < val_per_class + train_per_class:
            raise UserError(f"train_per_class + val_per_class = {train_per_class + val_per_class}: class "
                            f"{CLASSES[c]} has only {len(idx)} held-out images")
        val += idx[:val_per_class].tolist()
        train += idx[val_per_class:val_per_class + train_per_class].tolist()
    used = set(val) | set(train)
    return sorted(val), sorted(train), [i for i in range(len(labels)) if i not in used]


def _jpeg(arr: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, "L").convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def prepare_ilsvrc_loc(out: str | os.PathLike[str], train_per_class: int = 150, val_per_class: int = 50,
                       canvas: int = 64, min_scale: float = 0.3, max_scale: float = 0.9, clutter: int = 3,
                       seed: int = 0, quality: int = 95) -> Path:
    """Write the ILSVRC CLS-LOC-style localisation tree under ``out`` (idempotent) and return ``out``: images of
    ``canvas`` pixels, the object's side ``min_scale``-``max_scale`` of it, ``clutter`` fragments per image."""
    if canvas < 32:
        raise UserError(f"canvas={canvas}: images need at least 32 pixels")
    if not 0 < min_scale <= max_scale <= 1:
        raise UserError(f"object scales must satisfy 0 < min_scale <= max_scale <= 1, got {min_scale}, {max_scale}")
    if train_per_class < 1 or val_per_class < 1 or clutter < 0:
        raise UserError("train_per_class and val_per_class must be at least 1, clutter at least 0")
    params = {"dataset": "ilsvrc-loc", "train_per_class": train_per_class, "val_per_class": val_per_class,
              "canvas": canvas, "min_scale": min_scale, "max_scale": max_scale, "clutter": clutter, "seed": seed,
              "quality": quality, "layout": "ILSVRC/Data/CLS-LOC"}

    def build(tmp: Path) -> None:
        x, y = load_held_out()
        val, train, rest = _assign(y, train_per_class, val_per_class)
        if clutter and not rest:
            raise UserError("no held-out item is left for the clutter; lower train_per_class or val_per_class")
        rng = np.random.default_rng(seed)
        data, ann, sets = (tmp / "ILSVRC" / d / "CLS-LOC" for d in ("Data", "Annotations", "ImageSets"))
        sets.mkdir(parents=True)
        solutions: dict[str, list[tuple[str, str]]] = {"train": [], "val": []}
        lists: dict[str, list[str]] = {"train": [], "val": []}
        blacklist: list[int] = []
        counters = [0] * len(CLASSES)
        source = {"database": "ILSVRC-style Fashion-MNIST localisation set (vgg-pipeline)"}
        for split, items in (("val", val), ("train", train)):
            for n, i in enumerate(items, start=1):
                wnid = WNIDS[int(y[i])]
                if split == "val":
                    stem, sub = f"ILSVRC2012_val_{n:08d}", Path("val")
                else:
                    counters[int(y[i])] += 1
                    stem, sub = f"{wnid}_{counters[int(y[i])]}", Path("train") / wnid
                picks = [x[int(j)] for j in rng.choice(rest, size=clutter)] if clutter else []
                arr, box, covered = compose_loc_image(x[i], picks, rng, canvas, min_scale, max_scale)
                xml = pascal_xml(stem, canvas, source, [{"name": wnid, "pose": "Unspecified", "truncated": 0,
                                                         "difficult": 0, "bndbox": box}], str(sub))
                for root, suffix, payload in ((data, ".JPEG", _jpeg(arr, quality)), (ann, ".xml", xml)):
                    (root / sub).mkdir(parents=True, exist_ok=True)
                    (root / sub / f"{stem}{suffix}").write_bytes(payload)
                solutions[split].append((stem, f"{wnid} {box['xmin']} {box['ymin']} {box['xmax']} {box['ymax']}"))
                lists[split].append(f"{wnid}/{stem}" if split == "train" else stem)
                if split == "val" and covered > BLACKLIST_COVER:
                    blacklist.append(n)
        for name, split in (("train_cls", "train"), ("train_loc", "train"), ("val", "val")):
            (sets / f"{name}.txt").write_text("".join(f"{s} {k}\n" for k, s in enumerate(lists[split], 1)))
        (tmp / "LOC_synset_mapping.txt").write_text("".join(f"{w} {c}\n" for w, c in zip(WNIDS, CLASSES, strict=False)))
        for split, rows in solutions.items():
            with open(tmp / f"LOC_{split}_solution.csv", "w", newline="", encoding="utf-8") as fh:
                csv.writer(fh, lineterminator="\n").writerows([("ImageId", "PredictionString"), *rows])
        (tmp / BLACKLIST).parent.mkdir(parents=True)
        (tmp / BLACKLIST).write_text("".join(f"{k}\n" for k in blacklist))

    return prepared_tree(out, params, build)
