"""Held-out Fashion-MNIST images as a PASCAL VOC 2007 tree of mosaics (paper Appendix B, VOC protocol): 1 to 4
objects on a 2 x 2 grid (one in eight small and faint, *difficult*), 25% train, 25% val, 50% test, every draw from
``default_rng(seed)``. data/README.md "VOC mosaics" gives the layout."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.errors import UserError
from pipeline.shipped import pascal_xml, prepared_tree, write_image_sets
from pipeline.shipped.fashion_mnist import CLASSES, HELD_OUT, load_held_out

__all__ = ["prepare_voc_mosaics", "VOC_SPLITS", "compose_mosaic", "mosaic_xml", "write_mosaics"]

VOC_SPLITS = ("train", "val", "trainval", "test")
#: probabilities of 1, 2, 3, 4 objects per image
N_OBJECTS_P = (0.3, 0.3, 0.2, 0.2)
DIFFICULT_P = 0.125
OBJECT_THRESHOLD = 40  # pixel value above which a pixel belongs to the object (for its box)


def compose_mosaic(objects: list[np.ndarray], rng: np.random.Generator, canvas: int) -> tuple[np.ndarray, list[dict]]:
    """Place 1..4 28x28 object images on a ``canvas`` x ``canvas`` grey image: (uint8 image, one dict per object:
    ``xmin, ymin, xmax, ymax`` 1-based inclusive, ``difficult``)."""
    cell = canvas // 2
    bg = rng.uniform(0, 50, size=(3, 3)).astype(np.float32)
    img = np.array(Image.fromarray(bg, mode="F").resize((canvas, canvas), Image.BILINEAR))
    cells = rng.permutation(4)[: len(objects)]
    boxes = []
    for obj, c in zip(objects, cells, strict=False):
        difficult = bool(rng.random() < DIFFICULT_P)
        side = int(rng.integers(14, 25)) if difficult else int(rng.integers(max(16, cell // 2), cell + 1))
        gain = 0.35 if difficult else 1.0
        patch = np.asarray(Image.fromarray(obj, "L").resize((side, side), Image.BILINEAR), dtype=np.float32) * gain
        cy, cx = divmod(int(c), 2)
        y0 = cy * cell + int(rng.integers(0, cell - side + 1))
        x0 = cx * cell + int(rng.integers(0, cell - side + 1))
        img[y0:y0 + side, x0:x0 + side] = np.maximum(img[y0:y0 + side, x0:x0 + side], patch)
        ys, xs = np.nonzero(patch > OBJECT_THRESHOLD * gain)
        if ys.size == 0:  # an all-dark object: its box is the patch
            ys, xs = np.array([0, side - 1]), np.array([0, side - 1])
        boxes.append({"xmin": x0 + int(xs.min()) + 1, "ymin": y0 + int(ys.min()) + 1,
                      "xmax": x0 + int(xs.max()) + 1, "ymax": y0 + int(ys.max()) + 1, "difficult": difficult})
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), boxes


def mosaic_xml(image_id: str, canvas: int, objects: list[dict]) -> bytes:
    """A VOC 2007 annotation file for one mosaic (objects carry ``name`` and box fields)."""
    source = {"database": "Fashion-MNIST mosaics (vgg-pipeline)",
              "annotation": "derived from Fashion-MNIST test images 5000-9999"}
    return pascal_xml(f"{image_id}.jpg", canvas, source, [
        {"name": o["name"], "pose": "Unspecified", "truncated": 0, "difficult": int(o["difficult"]),
         "bndbox": {k: o[k] for k in ("xmin", "ymin", "xmax", "ymax")}} for o in objects], "VOC2007")


def write_mosaics(voc: Path, ids: list[str], objects_p: tuple[float, ...], order: np.ndarray,
                  rng: np.random.Generator, canvas: int, quality: int, what: str) -> Iterator[tuple[str, list[dict]]]:
    """Draw the number of ``what`` (1 to 4, probabilities ``objects_p``) of each image and compose a mosaic of the
    next held-out items of ``order`` into ``voc/JPEGImages/<id>.jpg``, in order; yields (image id, its objects:
    box fields, ``difficult`` and the class ``name``)."""
    counts = rng.choice(np.arange(1, 5), size=len(ids), p=objects_p)
    if counts.sum() > len(order):
        raise UserError(f"images={len(ids)} needs {counts.sum()} {what}; only {len(order)} held-out images exist")
    x, y = load_held_out()
    (voc / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (voc / "Annotations").mkdir(exist_ok=True)
    for image_id, pick in zip(ids, np.split(order[:counts.sum()], np.cumsum(counts)[:-1]), strict=True):
        arr, boxes = compose_mosaic([x[i] for i in pick], rng, canvas)
        Image.fromarray(arr, "L").convert("RGB").save(voc / "JPEGImages" / f"{image_id}.jpg", quality=quality)
        yield image_id, [dict(b, name=CLASSES[int(y[i])]) for b, i in zip(boxes, pick, strict=False)]


def _image_labels(objects: list[dict]) -> list[int]:
    """Per-class 1 / -1 / 0 of one image (the devkit's rule)."""
    easy, hard = ({o["name"] for o in objects if o["difficult"] == d} for d in (False, True))
    return [1 if c in easy else 0 if c in hard else -1 for c in CLASSES]


def prepare_voc_mosaics(out: str | os.PathLike[str], images: int = 2000, canvas: int = 112, seed: int = 0,
                        quality: int = 95) -> Path:
    """Write the VOC 2007-style mosaic tree under ``out/VOCdevkit/VOC2007/`` and return ``out`` (once:
    :func:`prepared_tree`): ``images`` mosaics of ``canvas`` x ``canvas`` pixels (at least 56), their objects
    drawn from the 5,000 held-out images, each at most once."""
    if canvas < 56:
        raise UserError(f"canvas={canvas}: mosaics need at least 56 pixels (2 x 2 cells of 28)")
    if images < 8:
        raise UserError(f"images={images}: need at least 8 mosaics for four splits")
    params = {"dataset": "voc-mosaics", "images": images, "canvas": canvas, "seed": seed, "quality": quality,
              "layout": "VOCdevkit/VOC2007"}

    def build(tmp: Path) -> None:
        rng = np.random.default_rng(seed)
        voc = tmp / "VOCdevkit" / "VOC2007"
        labels = {}
        order = np.arange(HELD_OUT.stop - HELD_OUT.start)
        for image_id, objects in write_mosaics(voc, [f"{n:06d}" for n in range(1, images + 1)], N_OBJECTS_P, order,
                                               rng, canvas, quality, "objects"):
            (voc / "Annotations" / f"{image_id}.xml").write_bytes(mosaic_xml(image_id, canvas, objects))
            labels[image_id] = _image_labels(objects)
        ids, perm, q = list(labels), rng.permutation(images), images // 4
        members = {"train": sorted(ids[i] for i in perm[:q]), "val": sorted(ids[i] for i in perm[q:2 * q]),
                   "test": sorted(ids[i] for i in perm[2 * q:])}
        members["trainval"] = sorted(members["train"] + members["val"])
        write_image_sets(voc / "ImageSets" / "Main", members, CLASSES, lambda i, c: f"{i} {labels[i][c]:2d}\n")

    return prepared_tree(out, params, build)
