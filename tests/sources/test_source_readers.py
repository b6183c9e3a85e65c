"""The readers on small datasets laid out exactly like ILSVRC-2012, VOC, Caltech and manifests."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from pipeline.errors import UserError
from pipeline.sources import open_source
from tests.helpers.layouts import (
    C101,
    C256,
    DEVKIT,
    VOC_CLASSES,
    VOC_IMAGES,
    WNIDS,
    build_caltech101,
    build_caltech256,
    build_ilsvrc,
    build_ilsvrc_kaggle,
    build_voc,
    jpeg_bytes,
    photo,
    voc_label,
)


def test_ilsvrc_val_labels_go_id_to_wnid_to_sorted_index(tmp_path):
    info = build_ilsvrc(tmp_path / "inet")
    src = open_source(tmp_path / "inet")
    assert src.kind == "ilsvrc"
    assert src.classes == WNIDS == sorted(w for _, w, _ in DEVKIT)  # the non-leaf synset is not a class
    assert DEVKIT[0][1] != WNIDS[0]  # ID 1 is not the first sorted wnid
    val = list(src.records("val"))
    assert [r.key for r in val] == [f"ILSVRC2012_val_{i:08d}" for i in range(1, 9)]
    assert [src.classes[r.label] for r in val] == info["val_wnids"]
    assert val[0].label == WNIDS.index("n02119789") == 3  # ground truth ID 1 = kit fox
    assert val[0].extras["wnid"] == "n02119789" and val[0].extras["class_name"].startswith("kit fox")


def test_ilsvrc_val_boxes_repaired(tmp_path):
    build_ilsvrc(tmp_path / "inet")
    b = next(open_source(tmp_path / "inet").records("val")).boxes
    assert b[0] == {"xmin": 20.5, "ymin": 30.0, "xmax": 120.0, "ymax": 100.0, "name": "n02119789", "difficult": False}
    assert (b[1]["xmin"], b[1]["xmax"], b[1]["ymin"], b[1]["ymax"]) == (150, 180, 90, 140)  # min > max swapped
    assert (b[2]["xmin"], b[2]["xmax"]) == (0, 200)  # clipped to the image


def test_ilsvrc_train_folders_and_synset_tar_read_in_memory(tmp_path):
    info = build_ilsvrc(tmp_path / "inet")
    src = open_source(tmp_path / "inet")
    recs = list(src.records("train"))
    assert {r.key for r in recs} == set(info["train"])
    for r in recs:
        assert r.read_bytes() == info["train"][r.key]
        assert src.classes[r.label] == r.key.split("_")[0]
    from_tar = [r for r in recs if r.extras["wnid"] == "n01443537"]
    assert from_tar and all(Path(r.path).name == "n01443537.tar" for r in from_tar)


def test_ilsvrc_outer_train_tar_of_synset_tars(tmp_path):
    info = build_ilsvrc(tmp_path / "src", tar_synset=None)
    root = tmp_path / "inet"
    root.mkdir()
    inner_dir = tmp_path / "inner"
    inner_dir.mkdir()
    with tarfile.open(root / "ILSVRC2012_img_train.tar", "w") as outer:
        for wnid in WNIDS:
            inner = inner_dir / f"{wnid}.tar"
            with tarfile.open(inner, "w") as tf:
                for f in sorted((tmp_path / "src" / "train" / wnid).iterdir()):
                    tf.add(f, arcname=f.name)
            outer.add(inner, arcname=inner.name)
    (root / "imagenet_2012_validation_synset_labels.txt").write_text("")
    src = open_source(root)
    recs = list(src.records("train"))
    assert len(recs) == len(info["train"])
    assert all(r.read_bytes() == info["train"][r.key] for r in recs)


def test_ilsvrc_tar_member_names_are_never_paths(tmp_path):
    root = tmp_path / "inet" / "train"
    root.mkdir(parents=True)
    data = jpeg_bytes(photo(0))
    with tarfile.open(root / "n01440764.tar", "w") as tf:
        import io

        ti = tarfile.TarInfo("../../escape/n01440764_1.JPEG")
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    src = open_source(tmp_path / "inet", "ilsvrc")
    (r,) = list(src.records("train"))
    assert r.key == "n01440764_1" and r.read_bytes() == data
    assert not (tmp_path / "escape").exists()


def test_ilsvrc_kaggle_layout(tmp_path):
    info = build_ilsvrc_kaggle(tmp_path / "kaggle")
    src = open_source(tmp_path / "kaggle")
    assert src.kind == "ilsvrc" and src.classes == WNIDS
    val = list(src.records("val"))
    assert [src.classes[r.label] for r in val] == info["val_wnids"]
    assert len(val[0].boxes) == 2 and val[0].boxes[0]["xmin"] == 10.0
    train = list(src.records("train"))
    assert len(train) == 8 and all(r.boxes and r.boxes[0]["name"] == src.classes[r.label] for r in train)


def test_ilsvrc_val_without_labels_is_a_user_error(tmp_path):
    build_ilsvrc(tmp_path / "inet")
    (tmp_path / "inet" / "ILSVRC2012_devkit_t12.tar.gz").unlink()
    src = open_source(tmp_path / "inet")
    with pytest.raises(UserError, match="devkit"):
        list(src.records("val"))


@pytest.mark.parametrize("year", ["2007", "2012"])
@pytest.mark.parametrize("class_files", [True, False])
def test_voc_labels_difficult_and_boxes(tmp_path, year, class_files):
    build_voc(tmp_path, year, class_files=class_files)
    src = open_source(tmp_path / "VOCdevkit")
    assert src.kind == "voc" and src.classes == VOC_CLASSES and src.label_kind == "multi"
    assert sorted(src.splits()) == ["test", "trainval"]
    recs = {r.key[-6:]: r for s in src.splits() for r in src.records(s)}
    assert set(recs) == set(VOC_IMAGES)
    for i, objs in VOC_IMAGES.items():
        r = recs[i]
        assert r.label is None
        assert r.labels == [voc_label(objs, c) for c in VOC_CLASSES]
        assert [(b["name"], b["difficult"]) for b in r.boxes] == [(n, bool(d)) for n, _, d in objs]
    assert recs["000012"].labels[VOC_CLASSES.index("car")] == 0  # only a difficult car
    assert recs["000005"].labels[VOC_CLASSES.index("chair")] == 1


def test_caltech101_keeps_background_and_faces_easy(tmp_path):
    build_caltech101(tmp_path)
    src = open_source(tmp_path)
    assert src.kind == "caltech101"
    assert src.classes == sorted(C101)  # 'BACKGROUND_Google', 'Faces', 'Faces_easy', ... codepoint order
    recs = list(src.records("all"))
    assert len(recs) == 2 * len(C101)  # .DS_Store ignored
    assert {src.classes[r.label] for r in recs} == set(C101)


def test_caltech256_jpg_only(tmp_path):
    build_caltech256(tmp_path)
    src = open_source(tmp_path / "256_ObjectCategories")
    assert src.kind == "caltech256" and src.classes == C256
    recs = list(src.records("all"))
    assert len(recs) == 8
    assert not any("greg" in str(r.path) or "RENAME2" in str(r.path) for r in recs)
    assert recs[-1].extras["class_label"] == "clutter"


def test_manifest_csv_and_jsonl(tmp_path):
    img = tmp_path / "imgs"
    img.mkdir()
    for i in range(4):
        (img / f"{i}.jpg").write_bytes(jpeg_bytes(photo(i)))
    (tmp_path / "list.csv").write_text(
        "path,label,split\nimgs/0.jpg,dog,train\nimgs/1.jpg,cat,train\nimgs/2.jpg,dog,val\n"
        + f"{img / '3.jpg'},ant,val\n"
    )
    src = open_source(tmp_path / "list.csv")
    assert src.kind == "manifest" and src.classes == ["ant", "cat", "dog"] and src.splits() == ["train", "val"]
    assert [(r.key, r.label) for r in src.records("train")] == [("imgs__0", 2), ("imgs__1", 1)]
    assert [r.read_bytes() for r in src.records("val")][1] == (img / "3.jpg").read_bytes()
    rows = [{"path": "imgs/0.jpg", "labels": ["dog", "cat"], "key": "a",
             "boxes": [{"xmin": 1, "ymin": 2, "xmax": 30, "ymax": 40, "name": "dog"}]},
            {"path": "imgs/1.jpg", "labels": {"cat": 1, "dog": 0}, "key": "b"}]
    (tmp_path / "list.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    src = open_source(tmp_path / "list.jsonl")
    assert src.label_kind == "multi" and src.classes == ["cat", "dog"]
    a, b = list(src.records("all"))
    assert a.labels == [1, 1] and b.labels == [1, 0] and a.boxes[0]["xmax"] == 30 and b.boxes is None


def test_manifest_errors_are_one_line(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"path": "x.jpg", "label": "a"}\nnot json\n')
    with pytest.raises(UserError, match=r"bad.jsonl:2: not JSON"):
        open_source(tmp_path / "bad.jsonl")
    (tmp_path / "nopath.csv").write_text("file,label\nx.jpg,a\n")
    with pytest.raises(UserError, match="no 'path'"):
        open_source(tmp_path / "nopath.csv")


def test_auto_detection_and_unknown_layout(tmp_path):
    build_voc(tmp_path / "v")
    build_caltech256(tmp_path / "c")
    assert open_source(tmp_path / "v" / "VOCdevkit" / "VOC2007").kind == "voc"
    assert open_source(tmp_path / "c").kind == "caltech256"
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.jpg").write_bytes(jpeg_bytes(photo(0)))
    with pytest.raises(UserError, match="cannot detect"):
        open_source(tmp_path / "flat")
    with pytest.raises(UserError, match="unknown format"):
        open_source(tmp_path / "v", "coco")
