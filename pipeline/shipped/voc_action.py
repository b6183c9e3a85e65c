"""Held-out Fashion-MNIST images as a PASCAL VOC 2012 *action* tree (paper Appendix B, Table 12).

``<out>/VOCdevkit/VOC2012/`` in the VOC 2012 action layout (:mod:`pipeline.sources.voc_action`):

* ``JPEGImages/2012_NNNNNN.jpg``: a ``canvas`` x ``canvas`` mosaic holding 1 to 4 "persons", one per
  cell of a 2 x 2 grid, each a held-out Fashion-MNIST image placed as in the VOC mosaics
  (:func:`pipeline.shipped.voc_mosaics.compose_mosaic`); most images hold several persons;
* ``Annotations/2012_NNNNNN.xml``: one ``<object>`` named ``person`` per item, with its 1-based
  inclusive ``<bndbox>`` and an ``<actions>`` element of 0/1 flags, one per action;
* ``ImageSets/Action/{train,val,trainval}.txt`` (image ids) and ``<action>_{train,val,trainval}.txt``
  (``"<image id> <person> <label:2d>"`` per person, 1 or -1), as the VOC 2012 devkit has them. Like
  VOC 2012's public release there is no labelled test split: results are reported on ``val``.

A person's action is its object's Fashion-MNIST class (``CLASSES``, used as the action names), so
the persons of one image usually do different actions: the whole image alone cannot tell them
apart, the person's box can, which is the point of Table 12's "image and box" setting. Objects are
drawn without repetition from a seeded permutation of the 5,000 held-out test images, images are
split half train, half val by a seeded permutation, and every draw comes from
``numpy.random.default_rng(seed)``: the tree is identical on every machine.
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
from pipeline.shipped.voc_mosaics import compose_mosaic

__all__ = ["prepare_voc_action", "ACTION_SPLITS", "action_xml"]

ACTION_SPLITS = ("train", "val", "trainval")
#: probabilities of 1, 2, 3, 4 persons per image
N_PERSONS_P = (0.1, 0.3, 0.3, 0.3)


def action_xml(image_id: str, canvas: int, persons: list[dict]) -> bytes:
    """A VOC 2012 action annotation: one ``person`` object per item with its box and action flags."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "VOC2012"
    ET.SubElement(root, "filename").text = f"{image_id}.jpg"
    src = ET.SubElement(root, "source")
    ET.SubElement(src, "database").text = "Fashion-MNIST action mosaics (vgg-pipeline)"
    ET.SubElement(src, "annotation").text = "derived from Fashion-MNIST test images 5000-9999"
    size = ET.SubElement(root, "size")
    for k, v in (("width", canvas), ("height", canvas), ("depth", 3)):
        ET.SubElement(size, k).text = str(v)
    ET.SubElement(root, "segmented").text = "0"
    for p in persons:
        el = ET.SubElement(root, "object")
        ET.SubElement(el, "name").text = "person"
        acts = ET.SubElement(el, "actions")
        for a in CLASSES:
            ET.SubElement(acts, a).text = "1" if a == p["action"] else "0"
        bb = ET.SubElement(el, "bndbox")
        for k in ("xmin", "ymin", "xmax", "ymax"):
            ET.SubElement(bb, k).text = str(p[k])
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8") + b"\n"


def prepare_voc_action(out: str | os.PathLike[str], images: int = 600, canvas: int = 112, seed: int = 0,
                       quality: int = 95) -> Path:
    """Write the VOC 2012-style action tree under ``out`` (idempotent).

    Args:
        out: folder to create; the tree goes to ``out/VOCdevkit/VOC2012/``.
        images: number of images (persons drawn from the 5,000 held-out images, each at most once).
        canvas: side of the square images in pixels (at least 56).
        seed: seed of every random draw.
        quality: JPEG quality.
    Returns:
        ``out``.
    """
    if canvas < 56:
        raise UserError(f"canvas={canvas}: action images need at least 56 pixels (2 x 2 cells of 28)")
    if images < 4:
        raise UserError(f"images={images}: need at least 4 images for the train and val splits")
    params = {"dataset": "voc-action", "images": images, "canvas": canvas, "seed": seed, "quality": quality,
              "layout": "VOCdevkit/VOC2012 (ImageSets/Action)"}

    def build(tmp: Path) -> None:
        x, y = load_split("t10k")
        x, y = x[HELD_OUT], y[HELD_OUT]
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(y))
        counts = rng.choice(np.arange(1, 5), size=images, p=N_PERSONS_P)
        if counts.sum() > len(y):
            raise UserError(f"images={images} needs {counts.sum()} persons; only {len(y)} held-out images exist")
        voc = tmp / "VOCdevkit" / "VOC2012"
        for d in ("JPEGImages", "Annotations", "ImageSets/Action"):
            (voc / d).mkdir(parents=True, exist_ok=True)
        ids = [f"2012_{i + 1:06d}" for i in range(images)]
        actions: dict[str, list[str]] = {}
        start = 0
        for image_id, n in zip(ids, counts, strict=False):
            pick = order[start:start + int(n)]
            start += int(n)
            arr, boxes = compose_mosaic([x[i] for i in pick], rng, canvas)
            persons = [dict(b, action=CLASSES[int(y[i])]) for b, i in zip(boxes, pick, strict=False)]
            Image.fromarray(arr, "L").convert("RGB").save(voc / "JPEGImages" / f"{image_id}.jpg", quality=quality)
            (voc / "Annotations" / f"{image_id}.xml").write_bytes(action_xml(image_id, canvas, persons))
            actions[image_id] = [p["action"] for p in persons]
        perm = rng.permutation(images)
        half = images // 2
        members = {"train": sorted(ids[i] for i in perm[:half]), "val": sorted(ids[i] for i in perm[half:])}
        members["trainval"] = sorted(members["train"] + members["val"])
        sets = voc / "ImageSets" / "Action"
        for split in ACTION_SPLITS:
            (sets / f"{split}.txt").write_text("".join(f"{i}\n" for i in members[split]), encoding="utf-8")
            for a in CLASSES:
                lines = "".join(f"{i} {k} {1 if act == a else -1:2d}\n"
                                for i in members[split] for k, act in enumerate(actions[i], start=1))
                (sets / f"{a}_{split}.txt").write_text(lines, encoding="utf-8")

    return prepared_tree(out, params, build)
