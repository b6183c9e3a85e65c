"""The VOC 2012 action reader on a tree in the devkit's own format: one record per annotated person."""

from __future__ import annotations

import pytest
from PIL import Image

from pipeline.data import open_data
from pipeline.errors import UserError
from pipeline.sources import open_source
from pipeline.sources.voc_action import VOCActionSource, parse_action_xml, person_key, split_person_key

ACTIONS = ["jumping", "phoning", "other"]

# image -> objects: (name, box, action flags or None): a non-action object ("bicycle") between persons
OBJECTS = {
    "2011_000001": [("person", (10, 20, 100, 200), {"jumping": 1, "phoning": 0, "other": 0}),
                    ("bicycle", (5, 5, 50, 50), None),
                    ("person", (120, 30, 200, 220), {"jumping": 0, "phoning": 1, "other": 0})],
    "2011_000002": [("person", (1, 1, 60, 90), {"jumping": 0, "phoning": 0, "other": 1})],
    "2011_000003": [("person", (30, 40, 150, 160), {"jumping": 1, "phoning": 1, "other": 0})],
}


def _xml(objects) -> str:
    parts = ["<annotation><folder>VOC2012</folder><size><width>320</width><height>240</height><depth>3</depth></size>"]
    for name, (x0, y0, x1, y1), flags in objects:
        acts = "" if flags is None else "<actions>" + "".join(f"<{a}>{v}</{a}>" for a, v in flags.items())
        acts += "</actions>" if flags is not None else ""
        parts.append(f"<object><name>{name}</name>{acts}<bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax>"
                     f"<ymax>{y1}</ymax></bndbox><point><x>50</x><y>60</y></point></object>")
    return "".join(parts) + "</annotation>"


@pytest.fixture()
def tree(tmp_path, photos):
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    for d in ("JPEGImages", "Annotations", "ImageSets/Action"):
        (voc / d).mkdir(parents=True)
    for i, (image_id, objs) in enumerate(OBJECTS.items()):
        Image.fromarray(photos[i % 2][:240, :320]).save(voc / "JPEGImages" / f"{image_id}.jpg")
        (voc / "Annotations" / f"{image_id}.xml").write_text(_xml(objs))
    sets = voc / "ImageSets" / "Action"
    (sets / "train.txt").write_text("2011_000001\n2011_000002\n")
    (sets / "test.txt").write_text("2011_000003\n")
    for a in ACTIONS:  # the devkit's "<image> <person> <label>" lines, person = index among all objects
        lines = [f"{img} {k} {1 if o[2][a] else -1:2d}" for img in ("2011_000001", "2011_000002")
                 for k, o in enumerate(OBJECTS[img], start=1) if o[2] is not None]
        (sets / f"{a}_train.txt").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_one_record_per_person_with_devkit_indices(tree):
    src = open_source(tree)  # an Action-only tree is detected
    assert isinstance(src, VOCActionSource) and src.classes == sorted(ACTIONS) and src.splits() == ["test", "train"]
    recs = list(src.records("train"))
    assert [r.key for r in recs] == ["2011_000001-1", "2011_000001-3", "2011_000002-1"]
    # labels per sorted action (jumping, other, phoning), from the per-action files
    assert [r.labels for r in recs] == [[1, -1, -1], [-1, -1, 1], [-1, 1, -1]]
    assert [(b["xmin"], b["ymin"], b["xmax"], b["ymax"]) for r in recs for b in r.boxes] == \
        [(10, 20, 100, 200), (120, 30, 200, 220), (1, 1, 60, 90)]
    assert all(len(r.boxes) == 1 and r.path.name == r.key.split("-")[0] + ".jpg" for r in recs)
    assert recs[1].extras["person"] == 3 and split_person_key(recs[1].key) == ("2011_000001", 3)
    assert person_key("2011_000001", 3) == "2011_000001-3"


def test_unlabelled_split_reads_the_xml_flags_and_views_are_multilabel(tree):
    recs = list(open_source(tree, "voc-action").records("test"))  # no per-action files: the XML's flags
    assert [r.key for r in recs] == ["2011_000003-1"] and recs[0].labels == [1, -1, 1]
    view = open_data(tree, "train", "voc-action")
    assert view.kind == "voc-action" and view.label_kind == "multi"
    persons = parse_action_xml(_xml(OBJECTS["2011_000001"]).encode())
    assert sorted(persons) == [1, 2, 3] and persons[2]["actions"] is None


def test_full_voc_tree_is_read_as_classification_unless_asked(tree):
    main = tree / "VOCdevkit" / "VOC2012" / "ImageSets" / "Main"
    main.mkdir()
    (main / "train.txt").write_text("2011_000001\n")
    assert open_source(tree).kind == "voc"
    assert open_source(tree, "voc-action").kind == "voc-action"


def test_bad_trees_are_clear_errors(tree, tmp_path):
    sets = tree / "VOCdevkit" / "VOC2012" / "ImageSets" / "Action"
    (sets / "jumping_train.txt").write_text("2011_000001 7  1\n")
    with pytest.raises(UserError, match="person 7 is listed"):
        list(VOCActionSource(tree).records("train"))
    (sets / "jumping_train.txt").write_text("2011_000001 1\n")
    with pytest.raises(UserError, match="expected '<image id> <person> <label>'"):
        list(VOCActionSource(tree).records("train"))
    with pytest.raises(UserError, match="no action split 'val'"):
        list(VOCActionSource(tree).records("val"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="ImageSets/Action"):
        VOCActionSource(tmp_path / "empty")
    with pytest.raises(UserError, match="not a person key"):
        split_person_key("2011_000001")
