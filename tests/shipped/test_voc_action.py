"""The shipped VOC 2012 action tree: devkit layout, persons with boxes and action flags, splits, determinism."""

from __future__ import annotations

import hashlib
import re
from xml.etree import ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import UserError
from pipeline.shipped.fashion_mnist import CLASSES
from pipeline.shipped.voc_action import ACTION_SPLITS, prepare_voc_action
from pipeline.sources import open_source


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return prepare_voc_action(tmp_path_factory.mktemp("va") / "action", images=40)


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(x for x in root.rglob("*") if x.is_file()):
        h.update(str(p.relative_to(root)).encode() + p.read_bytes())
    return h.hexdigest()


def test_layout_labels_and_boxes(tree):
    voc = tree / "VOCdevkit" / "VOC2012"
    sets = voc / "ImageSets" / "Action"
    ids = sorted(p.stem for p in (voc / "JPEGImages").glob("*.jpg"))
    assert ids == [f"2012_{i:06d}" for i in range(1, 41)] and not (voc / "ImageSets" / "Main").exists()
    members = {s: (sets / f"{s}.txt").read_text().split() for s in ACTION_SPLITS}
    assert len(members["train"]) == len(members["val"]) == 20 and not set(members["train"]) & set(members["val"])
    assert sorted(members["train"] + members["val"]) == members["trainval"] == ids
    n_persons = []
    for image_id in ids:
        root = ET.parse(voc / "Annotations" / f"{image_id}.xml").getroot()
        objs = root.findall("object")
        n_persons.append(len(objs))
        img = np.asarray(Image.open(voc / "JPEGImages" / f"{image_id}.jpg").convert("L"), dtype=np.float32)
        for o in objs:
            assert o.findtext("name") == "person"
            flags = {a.tag: int(a.text) for a in o.find("actions")}
            assert sorted(flags) == sorted(CLASSES) and sum(flags.values()) == 1
            x0, y0, x1, y1 = (int(o.find("bndbox").findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            assert 1 <= x0 < x1 <= 112 and 1 <= y0 < y1 <= 112
            assert img[y0 - 1:y1, x0 - 1:x1].max() > 60  # the box holds the object
    assert max(n_persons) >= 3 and np.mean(n_persons) > 2  # several persons per image
    for s in ACTION_SPLITS:
        for a in CLASSES:
            lines = (sets / f"{a}_{s}.txt").read_text().splitlines()
            assert all(re.fullmatch(r"2012_\d{6} [1-4] (-1| 1)", ln) for ln in lines)
            assert len(lines) == sum(n for i, n in zip(ids, n_persons, strict=False) if i in members[s])
    # the reader agrees: one record per person, its label = the flag in the XML
    src = open_source(tree)
    recs = list(src.records("val"))
    assert src.kind == "voc-action" and src.classes == sorted(CLASSES)
    assert len(recs) == sum(n for i, n in zip(ids, n_persons, strict=False) if i in members["val"])
    for r in recs[:10]:
        image_id, k = r.key.rsplit("-", 1)
        o = ET.parse(voc / "Annotations" / f"{image_id}.xml").getroot().findall("object")[int(k) - 1]
        assert r.labels == [2 * int(o.find("actions").findtext(a)) - 1 for a in src.classes]


def test_deterministic_idempotent_and_checked(tree, tmp_path):
    again = prepare_voc_action(tmp_path / "again", images=40)
    assert _digest(again) == _digest(tree)
    assert prepare_voc_action(tree, images=40) == tree  # reused
    with pytest.raises(UserError, match="other parameters"):
        prepare_voc_action(tree, images=41)
    other = prepare_voc_action(tmp_path / "seed1", images=40, seed=1)
    assert _digest(other) != _digest(tree)
    with pytest.raises(UserError, match="needs .* persons"):
        prepare_voc_action(tmp_path / "big", images=3000)
