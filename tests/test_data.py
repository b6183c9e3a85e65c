"""``open_data``: the same samples and labels from a shard folder and from its source."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.data import DataView, open_data
from pipeline.errors import UserError
from pipeline.shards import ShardConfig, run_shard
from tests.helpers.layouts import build_bad_tree, build_ilsvrc, build_voc


@pytest.fixture(scope="module")
def fm(tmp_path_factory):
    from pipeline.shipped.fashion_mnist import prepare_fashion_mnist

    root = prepare_fashion_mnist(tmp_path_factory.mktemp("fm") / "fm", 6, 3)
    out = root.parent / "shards"
    run_shard(ShardConfig(source=str(root), out=str(out), workers=1, progress=False, shard_count=10))
    return root, out


def test_shards_and_source_agree(fm):
    root, out = fm
    sh, src = open_data(out, "val"), open_data(root, "val")
    assert isinstance(sh, DataView) and sh.kind == "shards" and src.kind == "imagefolder"
    assert sh.classes == src.classes and len(sh) == len(src) == 30 and sh.split == src.split == "val"
    assert sh.fingerprint != src.fingerprint and len(src.fingerprint) == 16
    by_key = {s.key: s for s in src}
    got = list(sh)
    assert [s.key for s in got] == [s.key for s in sh]  # stable order
    for s in got:
        r = by_key[s.key]
        assert s.label == r.label and s.error is None and s.image.mode == "RGB" and s.image.size == r.image.size
        diff = np.abs(np.asarray(s.image, dtype=np.int16) - np.asarray(r.image, dtype=np.int16)).mean()
        assert diff < 4


@pytest.mark.parametrize("which", ["shards", "source"])
def test_entries_and_decode_agree_with_iteration(fm, which):
    """entries() lists what iteration yields, without decoding; decode(rows) gives those rows' images."""
    root, out = fm
    view = open_data(out if which == "shards" else root, "val")
    samples = list(view)
    entries = view.entries()
    assert [(e.key, e.label, e.boxes) for e in entries] == [(s.key, s.label, s.boxes) for s in samples]
    rows = [7, 0, 29, 7, 13]  # any order, repeats: each row once, increasing
    items = list(view.decode(rows))
    assert [i.row for i in items] == [0, 7, 13, 29]
    for i in items:
        assert i.key == samples[i.row].key and i.error is None
        np.testing.assert_array_equal(np.asarray(i.image), np.asarray(samples[i.row].image))
    assert list(view.decode([])) == []


def test_default_split_and_errors(fm, tmp_path):
    root, out = fm
    assert open_data(out).split == "val" and open_data(root).split == "val"
    with pytest.raises(UserError, match="no split 'test'"):
        open_data(out, "test")
    with pytest.raises(UserError, match="not found"):
        open_data(tmp_path / "nothing")


def test_source_view_reports_undecodable_images(tmp_path):
    build_bad_tree(tmp_path / "bad")
    samples = list(open_data(tmp_path / "bad", "train"))
    errors = {s.key: s.error for s in samples if s.image is None}
    assert set(errors) == {"good__broken_link", "odd__truncated", "odd__empty", "odd__page", "odd__bomb"}
    assert errors["odd__empty"] == "empty file" and errors["good__broken_link"].startswith("unreadable")


def test_multi_label_and_boxes_from_voc_and_ilsvrc(tmp_path):
    build_voc(tmp_path / "voc")
    v = open_data(tmp_path / "voc", "test")
    assert v.label_kind == "multi" and len(v) == 2
    s = next(iter(v))
    assert s.label is None and len(s.labels) == 20 and s.boxes[0]["name"] == "bicycle"
    info = build_ilsvrc(tmp_path / "inet")
    v = open_data(tmp_path / "inet", "val")
    assert [v.classes[s.label] for s in v] == info["val_wnids"]
    out = tmp_path / "inet_shards"
    run_shard(ShardConfig(source=str(tmp_path / "inet"), out=str(out), max_side=75, workers=1, progress=False))
    sv = open_data(out, "val")
    for s in sv:  # boxes in the coordinates of the stored (resized) image
        assert s.image.size == (100, 75)
        assert all(0 <= b["xmin"] < b["xmax"] <= 100 and 0 <= b["ymin"] < b["ymax"] <= 75 for b in s.boxes)
