"""The VOC 2007-style mosaics: exact layout, XML boxes on the objects, devkit labels, splits, determinism."""

from __future__ import annotations

import re
from xml.etree import ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import UserError
from pipeline.shipped.fashion_mnist import CLASSES
from pipeline.shipped.voc_mosaics import VOC_SPLITS, prepare_voc_mosaics


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return prepare_voc_mosaics(tmp_path_factory.mktemp("vm") / "voc", images=120)


def _objects(voc, image_id):
    root = ET.parse(voc / "Annotations" / f"{image_id}.xml").getroot()
    out = []
    for o in root.findall("object"):
        bb = o.find("bndbox")
        out.append({"name": o.findtext("name"), "difficult": o.findtext("difficult") == "1",
                    **{k: int(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")}})
    return root, out


def test_layout_and_splits(tree):
    voc = tree / "VOCdevkit" / "VOC2007"
    main = voc / "ImageSets" / "Main"
    ids = sorted(p.stem for p in (voc / "JPEGImages").glob("*.jpg"))
    assert ids == [f"{i:06d}" for i in range(1, 121)]
    assert sorted(p.stem for p in (voc / "Annotations").glob("*.xml")) == ids
    sets = {s: (main / f"{s}.txt").read_text().split() for s in VOC_SPLITS}
    assert all(v == sorted(v) for v in sets.values())
    assert not set(sets["train"]) & set(sets["val"]) and sorted(sets["train"] + sets["val"]) == sets["trainval"]
    assert not set(sets["trainval"]) & set(sets["test"]) and sorted(sets["trainval"] + sets["test"]) == ids
    assert len(sets["train"]) == len(sets["val"]) == 30 and len(sets["test"]) == 60
    for s in VOC_SPLITS:
        for c in CLASSES:
            lines = (main / f"{c}_{s}.txt").read_text().splitlines()
            assert [ln.split()[0] for ln in lines] == sets[s]
            assert all(re.fullmatch(r"\d{6} (-1| 0| 1)", ln) for ln in lines)  # the devkit's "%s %2d"


def test_labels_follow_the_devkit_rule_from_the_xml(tree):
    voc = tree / "VOCdevkit" / "VOC2007"
    main = voc / "ImageSets" / "Main"
    labels = {c: dict(ln.split() for ln in (main / f"{c}_test.txt").read_text().splitlines()) for c in CLASSES}
    n_difficult = n_zero = 0
    for image_id in (main / "test.txt").read_text().split():
        _, objs = _objects(voc, image_id)
        assert 1 <= len(objs) <= 4
        n_difficult += sum(o["difficult"] for o in objs)
        for c in CLASSES:
            mine = [o for o in objs if o["name"] == c]
            expect = 1 if any(not o["difficult"] for o in mine) else (0 if mine else -1)
            assert int(labels[c][image_id]) == expect
            n_zero += expect == 0
    assert n_difficult > 0 and n_zero > 0  # some difficult-only labels exist


def test_boxes_sit_on_the_objects(tree):
    voc = tree / "VOCdevkit" / "VOC2007"
    for k in range(1, 121, 7):
        image_id = f"{k:06d}"
        root, objs = _objects(voc, image_id)
        img = np.asarray(Image.open(voc / "JPEGImages" / f"{image_id}.jpg"))
        assert img.shape == (112, 112, 3) and root.findtext("size/width") == "112"
        assert all(o["name"] in CLASSES for o in objs)
        inside = np.zeros(img.shape[:2], bool)
        for o in objs:
            assert 1 <= o["xmin"] <= o["xmax"] <= 112 and 1 <= o["ymin"] <= o["ymax"] <= 112
            crop = img[o["ymin"] - 1:o["ymax"], o["xmin"] - 1:o["xmax"], 0]  # 1-based inclusive
            assert crop.max() > (30 if o["difficult"] else 90)  # the object is in its box
            inside[o["ymin"] - 1:o["ymax"], o["xmin"] - 1:o["xmax"]] = True
        assert img[..., 0][~inside].max() < 90  # nothing bright outside the boxes: background only


def test_deterministic_and_refuses_other_parameters(tree, tmp_path):
    a = prepare_voc_mosaics(tmp_path / "a", images=12)
    b = prepare_voc_mosaics(tmp_path / "b", images=12)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert prepare_voc_mosaics(tree, images=120) == tree
    with pytest.raises(UserError, match="other parameters"):
        prepare_voc_mosaics(tree, images=100)
    with pytest.raises(UserError, match="held-out"):
        prepare_voc_mosaics(tmp_path / "big", images=4000)


def test_voc_reader_reads_it(tree):
    from pipeline.sources import open_source

    voc = tree / "VOCdevkit" / "VOC2007"
    src = open_source(tree / "VOCdevkit", "auto")
    assert "voc" in src.kind and sorted(src.classes) == sorted(CLASSES)
    main = voc / "ImageSets" / "Main"
    recs = {r.key.split("/")[-1]: r for r in src.records("test")}
    assert sorted(recs) == (main / "test.txt").read_text().split()
    bag = dict(ln.split() for ln in (main / "bag_test.txt").read_text().splitlines())
    ci = src.classes.index("bag")
    assert all(int(bag[k]) == r.labels[ci] for k, r in recs.items())
