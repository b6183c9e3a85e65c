"""The ILSVRC-style localisation set (``vgg prepare-data ilsvrc-loc``): layout, boxes, determinism.

The boxes are checked through the project's own ILSVRC reader against an independent
reconstruction: the object of validation image n is the n-th held-out item of the documented
assignment (the first ``val_per_class`` of each class, in file order); the test finds the side at
which that item, bilinearly scaled, has the XML box's width and height, checks that the decoded
JPEG shows the item's bright pixels at that place, and that the item's tight box there is the
XML box (IoU 1).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from pipeline.data import open_data
from pipeline.errors import UserError
from pipeline.localise.boxes import iou
from pipeline.shipped.fashion_mnist import CLASSES, HELD_OUT, load_split
from pipeline.shipped.ilsvrc_loc import BLACKLIST, OBJECT_THRESHOLD, WNIDS, prepare_ilsvrc_loc

VAL, TRAIN = 3, 4


@pytest.fixture(scope="module")
def loc_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("ilsvrc") / "loc"
    return prepare_ilsvrc_loc(root, train_per_class=TRAIN, val_per_class=VAL, canvas=64, seed=3)


def _held_out():
    x, y = load_split("t10k")
    return x[HELD_OUT], y[HELD_OUT]


def _val_items(y: np.ndarray) -> list[int]:
    return sorted(i for c in range(len(CLASSES)) for i in np.flatnonzero(y == c)[:VAL])


def _tight(patch: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(patch > OBJECT_THRESHOLD)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def test_layout_is_ilsvrc_cls_loc(loc_tree):
    train = open_data(loc_tree, "train")
    val = open_data(loc_tree, "val")
    assert train.kind == val.kind == "ilsvrc"
    assert train.classes == WNIDS and len(train) == TRAIN * 10 and len(val) == VAL * 10
    assert (loc_tree / "ILSVRC/Data/CLS-LOC/val/ILSVRC2012_val_00000001.JPEG").is_file()
    assert (loc_tree / f"ILSVRC/Annotations/CLS-LOC/train/{WNIDS[0]}/{WNIDS[0]}_1.xml").is_file()
    mapping = (loc_tree / "LOC_synset_mapping.txt").read_text().split("\n")
    assert mapping[:2] == [f"{WNIDS[0]} {CLASSES[0]}", f"{WNIDS[1]} {CLASSES[1]}"]
    assert val.source.words[WNIDS[3]] == CLASSES[3]
    for s in train:
        assert s.key.startswith(WNIDS[s.label]) and len(s.boxes) == 1 and s.boxes[0]["name"] == WNIDS[s.label]


def test_xml_boxes_are_the_pasted_objects(loc_tree):
    x, y = _held_out()
    items = _val_items(y)
    samples = list(open_data(loc_tree, "val"))
    assert len(samples) == len(items)
    for n, (s, i) in enumerate(zip(samples, items, strict=False), start=1):
        assert s.key == f"ILSVRC2012_val_{n:08d}" and s.label == int(y[i])
        b = s.boxes[0]
        xml = [b["xmin"], b["ymin"], b["xmax"], b["ymax"]]
        w, h = xml[2] - xml[0] + 1, xml[3] - xml[1] + 1
        found = None
        for side in range(8, 65):
            patch = np.asarray(Image.fromarray(x[i], "L").resize((side, side), Image.BILINEAR), dtype=np.float32)
            x1, y1, x2, y2 = _tight(patch)
            if (x2 - x1 + 1, y2 - y1 + 1) != (w, h):
                continue
            left, top = int(xml[0]) - x1, int(xml[1]) - y1
            if left < 0 or top < 0 or left + side > 64 or top + side > 64:
                continue
            img = np.asarray(s.image.convert("L"), dtype=np.float32)[top:top + side, left:left + side]
            bright = patch > 120
            if np.abs(img[bright] - patch[bright]).mean() < 12:  # the item's bright pixels are in the JPEG there
                found = (left + x1, top + y1, left + x2, top + y2)
                break
        assert found is not None, f"image {n}: no scaled copy of held-out item {i} matches its XML box {xml}"
        assert iou(found, xml) == 1.0


def test_same_seed_same_bytes_other_seed_other_images(loc_tree, tmp_path):
    again = prepare_ilsvrc_loc(tmp_path / "again", train_per_class=TRAIN, val_per_class=VAL, canvas=64, seed=3)
    other = prepare_ilsvrc_loc(tmp_path / "other", train_per_class=TRAIN, val_per_class=VAL, canvas=64, seed=4)

    def digest(root):
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()}

    assert digest(again) == digest(loc_tree)
    d_other = digest(other)
    assert d_other.keys() == digest(loc_tree).keys()
    assert d_other["ILSVRC/Data/CLS-LOC/val/ILSVRC2012_val_00000001.JPEG"] != \
        digest(loc_tree)["ILSVRC/Data/CLS-LOC/val/ILSVRC2012_val_00000001.JPEG"]
    with pytest.raises(UserError, match="other parameters"):
        prepare_ilsvrc_loc(tmp_path / "again", train_per_class=TRAIN, val_per_class=VAL, canvas=64, seed=5)


def test_scales_and_blacklist_file(loc_tree):
    sides = []
    for s in open_data(loc_tree, "train"):
        b = s.boxes[0]
        sides.append(max(b["xmax"] - b["xmin"] + 1, b["ymax"] - b["ymin"] + 1) / 64)
    assert 0.15 < min(sides) and max(sides) <= 0.9 and max(sides) - min(sides) > 0.3
    lines = (loc_tree / BLACKLIST).read_text().split()
    assert all(1 <= int(v) <= VAL * 10 for v in lines)


def test_refuses_more_objects_than_held_out(tmp_path):
    with pytest.raises(UserError, match="held-out images"):
        prepare_ilsvrc_loc(tmp_path / "x", train_per_class=460, val_per_class=50)
