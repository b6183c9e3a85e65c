"""Held-out Fashion-MNIST images as a PASCAL VOC 2012 *action* tree (paper Appendix B, Table 12): mosaics of 1 to 4
"persons" whose action is their item's class, so only a person's box tells the persons of one image apart; half
train, half val, every draw from ``default_rng(seed)``. data/README.md "VOC action" gives the layout."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pipeline.errors import UserError
from pipeline.shipped import pascal_xml, prepared_tree, write_image_sets
from pipeline.shipped.fashion_mnist import CLASSES, HELD_OUT
from pipeline.shipped.voc_mosaics import write_mosaics

__all__ = ["prepare_voc_action", "ACTION_SPLITS", "action_xml"]

ACTION_SPLITS = ("train", "val", "trainval")
#: probabilities of 1, 2, 3, 4 persons per image
N_PERSONS_P = (0.1, 0.3, 0.3, 0.3)


def action_xml(image_id: str, canvas: int, persons: list[dict]) -> bytes:
    """A VOC 2012 action annotation: one ``person`` object per item with its action flags and box."""
    source = {"database": "Fashion-MNIST action mosaics (vgg-pipeline)",
              "annotation": "derived from Fashion-MNIST test images 5000-9999"}
    return pascal_xml(f"{image_id}.jpg", canvas, source, [
        {"name": "person", "actions": {a: int(a == p["action"]) for a in CLASSES},
         "bndbox": {k: p[k] for k in ("xmin", "ymin", "xmax", "ymax")}} for p in persons], "VOC2012")


def prepare_voc_action(out: str | os.PathLike[str], images: int = 600, canvas: int = 112, seed: int = 0,
                       quality: int = 95) -> Path:
    """Write the VOC 2012-style action tree under ``out/VOCdevkit/VOC2012/`` and return ``out`` (once:
    :func:`prepared_tree`): ``images`` images of ``canvas`` x ``canvas`` pixels (at least 56), their persons drawn
    from the 5,000 held-out images, each at most once."""
    if canvas < 56:
        raise UserError(f"canvas={canvas}: action images need at least 56 pixels (2 x 2 cells of 28)")
    if images < 4:
        raise UserError(f"images={images}: need at least 4 images for the train and val splits")
    params = {"dataset": "voc-action", "images": images, "canvas": canvas, "seed": seed, "quality": quality,
              "layout": "VOCdevkit/VOC2012 (ImageSets/Action)"}

    def build(tmp: Path) -> None:
        rng = np.random.default_rng(seed)
        order = rng.permutation(HELD_OUT.stop - HELD_OUT.start)
        voc = tmp / "VOCdevkit" / "VOC2012"
        actions: dict[str, list[str]] = {}
        for image_id, objects in write_mosaics(voc, [f"2012_{n:06d}" for n in range(1, images + 1)], N_PERSONS_P,
                                               order, rng, canvas, quality, "persons"):
            persons = [dict(o, action=o["name"]) for o in objects]
            (voc / "Annotations" / f"{image_id}.xml").write_bytes(action_xml(image_id, canvas, persons))
            actions[image_id] = [o["name"] for o in objects]
        ids, perm, half = list(actions), rng.permutation(images), images // 2
        members = {"train": sorted(ids[i] for i in perm[:half]), "val": sorted(ids[i] for i in perm[half:])}
        members["trainval"] = sorted(members["train"] + members["val"])
        write_image_sets(voc / "ImageSets" / "Action", members, CLASSES, lambda i, c: "".join(
            f"{i} {k} {1 if act == CLASSES[c] else -1:2d}\n" for k, act in enumerate(actions[i], start=1)))

    return prepared_tree(out, params, build)
