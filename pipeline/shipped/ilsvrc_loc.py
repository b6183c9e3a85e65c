"""Held-out Fashion-MNIST images as an ILSVRC CLS-LOC localisation tree (paper Appendix A).

ILSVRC's localisation task has one dominant object per image, at any scale and position, and
boxes in PASCAL-style XML. This module derives such a set from the 5,000 held-out Fashion-MNIST
test images (``HELD_OUT``), which no classifier of the project trains or validates on, laid out
as the CLS-LOC tree unpacks (docs/formats.md section 1, the ``imagenet-object-localization-challenge``
layout), so the project's ILSVRC reader reads it as it reads ImageNet:

* ``ILSVRC/Data/CLS-LOC/train/<wnid>/<wnid>_<n>.JPEG`` and ``ILSVRC/Data/CLS-LOC/val/ILSVRC2012_val_<8 digits>.JPEG``
  (flat, numbered from 1);
* ``ILSVRC/Annotations/CLS-LOC/train/<wnid>/<wnid>_<n>.xml`` and ``.../val/ILSVRC2012_val_<8 digits>.xml``:
  ``size`` and one ``object`` (``name`` = wnid, ``bndbox``) tight around the object's pixels;
* ``ILSVRC/ImageSets/CLS-LOC/{train_cls,train_loc,val}.txt``;
* ``LOC_synset_mapping.txt`` (``wnid name``, sorted wnids: line i = class i), ``LOC_train_solution.csv``
  and ``LOC_val_solution.csv`` (``ImageId,PredictionString`` with ``wnid xmin ymin xmax ymax``);
* ``ILSVRC2014_devkit/data/ILSVRC2014_clsloc_validation_blacklist.txt``: the devkit's blacklist
  format, one 1-based validation image index per line; here the validation images whose object is
  more than a quarter covered by clutter (an ambiguous annotation, as the real list's).

The wnids are synthetic (``n9900000<label>``, not WordNet synsets); their sorted order is the
Fashion-MNIST label order and ``LOC_synset_mapping.txt`` names them with the Fashion-MNIST class
names, which the localisation stages use to match the wnids to a Fashion-MNIST classifier's classes.

Each image is a ``canvas`` x ``canvas`` RGB JPEG: a dim smooth background with textured noise,
``clutter`` dim fragments of other held-out items (a random piece of an item, 35-50% brightness)
anywhere on the canvas, and the object on top: one held-out item scaled to a random side of
``min_scale``-``max_scale`` of the canvas side, placed at a random position entirely inside the
canvas. Box coordinates are inclusive 0-based pixel indices (the project's reader takes XML
coordinates as pixel indices, first pixel 0): the tight box of the object's pixels brighter than
``OBJECT_THRESHOLD``. Validation images take the first ``val_per_class`` held-out items of each
class (file order), training images the next ``train_per_class``; clutter comes from the held-out
items used by neither. Every draw comes from ``numpy.random.default_rng(seed)``: the same command
gives the same files on every machine.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
from PIL import Image

from pipeline.errors import UserError
from pipeline.shipped import prepared_tree
from pipeline.shipped.fashion_mnist import CLASSES, HELD_OUT, load_split

__all__ = ["prepare_ilsvrc_loc", "WNIDS", "compose_loc_image", "loc_xml", "BLACKLIST", "OBJECT_THRESHOLD"]

#: synthetic wnids, one per Fashion-MNIST class, sorting in label order
WNIDS = [f"n9900000{i}" for i in range(len(CLASSES))]
#: pixel value above which a pixel of the (scaled) object belongs to it, for its box
OBJECT_THRESHOLD = 40
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
                      min_scale: float, max_scale: float) -> tuple[np.ndarray, dict]:
    """One localisation image: background, clutter fragments, then the object.

    Args:
        obj: the 28x28 object image (bright on black).
        clutter: 28x28 items of which a random piece each becomes a dim fragment.
        rng: the generator of every draw.
        canvas: side of the square image.
        min_scale, max_scale: range of the object's side as a fraction of the canvas side.
    Returns:
        (uint8 canvas x canvas image, the object's ``xmin, ymin, xmax, ymax`` (0-based inclusive), ``side``,
        ``left``, ``top`` and ``covered``: the fraction of its box under bright clutter).
    """
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
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), dict(box, side=side, left=left, top=top, covered=covered)


def loc_xml(folder: str, stem: str, canvas: int, wnid: str, box: dict) -> bytes:
    """An ILSVRC CLS-LOC annotation (PASCAL-style XML) with one object."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = folder
    ET.SubElement(root, "filename").text = stem
    src = ET.SubElement(root, "source")
    ET.SubElement(src, "database").text = "ILSVRC-style Fashion-MNIST localisation set (vgg-pipeline)"
    size = ET.SubElement(root, "size")
    for k, v in (("width", canvas), ("height", canvas), ("depth", 3)):
        ET.SubElement(size, k).text = str(v)
    ET.SubElement(root, "segmented").text = "0"
    el = ET.SubElement(root, "object")
    ET.SubElement(el, "name").text = wnid
    ET.SubElement(el, "pose").text = "Unspecified"
    ET.SubElement(el, "truncated").text = "0"
    ET.SubElement(el, "difficult").text = "0"
    bb = ET.SubElement(el, "bndbox")
    for k in ("xmin", "ymin", "xmax", "ymax"):
        ET.SubElement(bb, k).text = str(box[k])
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8") + b"\n"


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


def _csv(path: Path, rows: list[tuple[str, str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["ImageId", "PredictionString"])
        w.writerows(rows)


def prepare_ilsvrc_loc(out: str | os.PathLike[str], train_per_class: int = 150, val_per_class: int = 50,
                       canvas: int = 64, min_scale: float = 0.3, max_scale: float = 0.9, clutter: int = 3,
                       seed: int = 0, quality: int = 95) -> Path:
    """Write the ILSVRC CLS-LOC-style localisation tree under ``out`` (idempotent).

    Args:
        out: folder to create (the tree's root: ``out/ILSVRC``, ``out/LOC_*``, ``out/ILSVRC2014_devkit``).
        train_per_class, val_per_class: images per class of each split (ILSVRC val: 50 per class).
        canvas: side of the square images in pixels (at least 32).
        min_scale, max_scale: range of the object's side as a fraction of the canvas side.
        clutter: dim fragments of other items per image.
        seed: seed of every random draw.
        quality: JPEG quality.
    Returns:
        ``out``.
    """
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
        x, y = load_split("t10k")
        x, y = x[HELD_OUT], y[HELD_OUT]
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
        for split, items in (("val", val), ("train", train)):
            for n, i in enumerate(items, start=1):
                wnid = WNIDS[int(y[i])]
                if split == "val":
                    stem, sub = f"ILSVRC2012_val_{n:08d}", Path("val")
                else:
                    counters[int(y[i])] += 1
                    stem, sub = f"{wnid}_{counters[int(y[i])]}", Path("train") / wnid
                picks = [x[int(j)] for j in rng.choice(rest, size=clutter)] if clutter else []
                arr, box = compose_loc_image(x[i], picks, rng, canvas, min_scale, max_scale)
                for root, suffix, payload in ((data, ".JPEG", _jpeg(arr, quality)),
                                              (ann, ".xml", loc_xml(str(sub), stem, canvas, wnid, box))):
                    (root / sub).mkdir(parents=True, exist_ok=True)
                    (root / sub / f"{stem}{suffix}").write_bytes(payload)
                solutions[split].append((stem, f"{wnid} {box['xmin']} {box['ymin']} {box['xmax']} {box['ymax']}"))
                lists[split].append(f"{wnid}/{stem}" if split == "train" else stem)
                if split == "val" and box["covered"] > BLACKLIST_COVER:
                    blacklist.append(n)
        (sets / "train_cls.txt").write_text("".join(f"{s} {k}\n" for k, s in enumerate(lists["train"], 1)))
        (sets / "train_loc.txt").write_text("".join(f"{s} {k}\n" for k, s in enumerate(lists["train"], 1)))
        (sets / "val.txt").write_text("".join(f"{s} {k}\n" for k, s in enumerate(lists["val"], 1)))
        (tmp / "LOC_synset_mapping.txt").write_text("".join(f"{w} {c}\n" for w, c in zip(WNIDS, CLASSES, strict=False)))
        _csv(tmp / "LOC_train_solution.csv", solutions["train"])
        _csv(tmp / "LOC_val_solution.csv", solutions["val"])
        (tmp / BLACKLIST).parent.mkdir(parents=True)
        (tmp / BLACKLIST).write_text("".join(f"{k}\n" for k in blacklist))

    return prepared_tree(out, params, build)
