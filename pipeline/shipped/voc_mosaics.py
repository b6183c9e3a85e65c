"""Held-out Fashion-MNIST images as a PASCAL VOC 2007 tree of mosaics (paper Appendix B, VOC protocol).

``<out>/VOCdevkit/VOC2007/`` laid out as the VOC 2007 archives unpack (docs/formats.md section 2):

* ``JPEGImages/NNNNNN.jpg``: a ``canvas`` x ``canvas`` RGB JPEG holding 1 to 4 objects, one per cell
  of a 2 x 2 grid, each a Fashion-MNIST image (bright object on black) scaled to a random size and
  placed at a random position in its cell, over a dim smooth background;
* ``Annotations/NNNNNN.xml``: VOC XML with one ``<object>`` per item (``name``, ``pose``,
  ``truncated``, ``difficult``, 1-based inclusive ``bndbox`` tight around the object's pixels);
* ``ImageSets/Main/{train,val,trainval,test}.txt`` and ``<class>_{train,val,trainval,test}.txt`` with
  the devkit's ``"<id> <label:2d>"`` lines: 1 = at least one non-difficult object of the class,
  -1 = none, 0 = difficult objects only.

The class names are Fashion-MNIST's (``pipeline.shipped.fashion_mnist.CLASSES``). Objects come, in
order, from the 5,000 held-out official test images (``HELD_OUT``) that no classifier of the
project trains or validates on, each used at most once. About one object in eight is *difficult*:
drawn small (14 to 24 pixels) and faint (35% brightness), so it is genuinely hard to see. Images are
split 25% train, 25% val, 50% test (like VOC 2007, trainval ~ test) by a seeded permutation. Every
draw comes from ``numpy.random.default_rng(seed)``, so the tree is identical on every machine.
"""

from __future__ import annotations

import os
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
from PIL import Image

from pipeline.errors import UserError
from pipeline.shipped import prepared_tree
from pipeline.shipped.fashion_mnist import CLASSES, HELD_OUT, load_split

__all__ = ["prepare_voc_mosaics", "VOC_SPLITS", "compose_mosaic", "mosaic_xml"]

VOC_SPLITS = ("train", "val", "trainval", "test")
#: probabilities of 1, 2, 3, 4 objects per image
N_OBJECTS_P = (0.3, 0.3, 0.2, 0.2)
DIFFICULT_P = 0.125
OBJECT_THRESHOLD = 40  # pixel value above which a pixel belongs to the object (for its box)


def compose_mosaic(objects: list[np.ndarray], rng: np.random.Generator, canvas: int) -> tuple[np.ndarray, list[dict]]:
    """Place 1..4 28x28 object images on a ``canvas`` x ``canvas`` grey image.

    Returns:
        (uint8 image, one dict per object: ``xmin, ymin, xmax, ymax`` 1-based inclusive, ``difficult``).
    """
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
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "VOC2007"
    ET.SubElement(root, "filename").text = f"{image_id}.jpg"
    src = ET.SubElement(root, "source")
    ET.SubElement(src, "database").text = "Fashion-MNIST mosaics (vgg-pipeline)"
    ET.SubElement(src, "annotation").text = "derived from Fashion-MNIST test images 5000-9999"
    size = ET.SubElement(root, "size")
    for k, v in (("width", canvas), ("height", canvas), ("depth", 3)):
        ET.SubElement(size, k).text = str(v)
    ET.SubElement(root, "segmented").text = "0"
    for o in objects:
        el = ET.SubElement(root, "object")
        ET.SubElement(el, "name").text = o["name"]
        ET.SubElement(el, "pose").text = "Unspecified"
        ET.SubElement(el, "truncated").text = "0"
        ET.SubElement(el, "difficult").text = "1" if o["difficult"] else "0"
        bb = ET.SubElement(el, "bndbox")
        for k in ("xmin", "ymin", "xmax", "ymax"):
            ET.SubElement(bb, k).text = str(o[k])
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8") + b"\n"


def _image_labels(objects: list[dict]) -> list[int]:
    """Per-class 1 / -1 / 0 of one image (the devkit's rule)."""
    out = []
    for name in CLASSES:
        mine = [o for o in objects if o["name"] == name]
        out.append(1 if any(not o["difficult"] for o in mine) else (0 if mine else -1))
    return out


def prepare_voc_mosaics(out: str | os.PathLike[str], images: int = 2000, canvas: int = 112, seed: int = 0,
                        quality: int = 95) -> Path:
    """Write the VOC 2007-style mosaic tree under ``out`` (idempotent).

    Args:
        out: folder to create; the tree goes to ``out/VOCdevkit/VOC2007/``.
        images: number of mosaics (each object of the 5,000 held-out images is used at most once).
        canvas: side of the square mosaics in pixels (at least 56).
        seed: seed of every random draw.
        quality: JPEG quality.
    Returns:
        ``out``.
    """
    if canvas < 56:
        raise UserError(f"canvas={canvas}: mosaics need at least 56 pixels (2 x 2 cells of 28)")
    if images < 8:
        raise UserError(f"images={images}: need at least 8 mosaics for four splits")
    params = {"dataset": "voc-mosaics", "images": images, "canvas": canvas, "seed": seed, "quality": quality,
              "layout": "VOCdevkit/VOC2007"}

    def build(tmp: Path) -> None:
        x, y = load_split("t10k")
        x, y = x[HELD_OUT], y[HELD_OUT]
        rng = np.random.default_rng(seed)
        counts = rng.choice(np.arange(1, 5), size=images, p=N_OBJECTS_P)
        if counts.sum() > len(y):
            raise UserError(f"images={images} needs {counts.sum()} objects; only {len(y)} held-out images exist")
        voc = tmp / "VOCdevkit" / "VOC2007"
        for d in ("JPEGImages", "Annotations", "ImageSets/Main"):
            (voc / d).mkdir(parents=True, exist_ok=True)
        ids = [f"{i + 1:06d}" for i in range(images)]
        labels = {}
        start = 0
        for image_id, n in zip(ids, counts, strict=False):
            pick = range(start, start + int(n))
            start += int(n)
            arr, boxes = compose_mosaic([x[i] for i in pick], rng, canvas)
            objects = [dict(b, name=CLASSES[int(y[i])]) for b, i in zip(boxes, pick, strict=False)]
            Image.fromarray(arr, "L").convert("RGB").save(voc / "JPEGImages" / f"{image_id}.jpg", quality=quality)
            (voc / "Annotations" / f"{image_id}.xml").write_bytes(mosaic_xml(image_id, canvas, objects))
            labels[image_id] = _image_labels(objects)
        perm = rng.permutation(images)
        n_tr, n_va = images // 4, images // 4
        members = {"train": sorted(ids[i] for i in perm[:n_tr]), "val": sorted(ids[i] for i in perm[n_tr:n_tr + n_va]),
                   "test": sorted(ids[i] for i in perm[n_tr + n_va:])}
        members["trainval"] = sorted(members["train"] + members["val"])
        main = voc / "ImageSets" / "Main"
        for split in VOC_SPLITS:
            (main / f"{split}.txt").write_text("".join(f"{i}\n" for i in members[split]), encoding="utf-8")
            for c, name in enumerate(CLASSES):
                lines = "".join(f"{i} {labels[i][c]:2d}\n" for i in members[split])
                (main / f"{name}_{split}.txt").write_text(lines, encoding="utf-8")

    return prepared_tree(out, params, build)
