"""The shard writer on real data: read back with webdataset and compared with the source."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
import webdataset as wds
from PIL import Image, ImageOps

from pipeline.errors import UserError
from pipeline.io import sha256_file
from pipeline.shards import ShardConfig, read_manifest, run_shard, shard_paths
from pipeline.sources import open_source
from tests.helpers.layouts import VOC_IMAGES, build_bad_tree, build_caltech256, build_ilsvrc, build_voc

AGREED_KEYS = {"format", "source", "classes", "splits", "config", "skipped", "fingerprint"}


def _shard(src, out, **kw) -> ShardResult:  # noqa: F821
    kw.setdefault("workers", 1)
    kw.setdefault("progress", False)
    return run_shard(ShardConfig(source=str(src), out=str(out), **kw))


def _read_back(out, split):
    """Raw samples of a split read with webdataset itself (not our reader)."""
    ds = wds.WebDataset(shard_paths(out, split), shardshuffle=False, empty_check=False)
    return list(ds)


def _rgb(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def test_fashion_mnist_shards_match_the_source_sample_by_sample(fm_tree, tmp_path):
    res = _shard(fm_tree, tmp_path / "s", shard_count=64)
    m = read_manifest(tmp_path / "s")
    assert AGREED_KEYS <= set(m) and m["format"] == "vgg-shards/1" and m == res.manifest
    assert m["source"]["kind"] == "imagefolder" and m["source"]["root"] == str(fm_tree)
    assert m["classes"] == sorted(os.listdir(fm_tree / "train"))
    assert m["config"]["max_side"] == 512 and m["skipped"] == {"count": 0, "by_reason": {}}
    src = open_source(fm_tree)
    for split, per in (("train", 20), ("val", 5)):
        sp = m["splits"][split]
        assert sp["count"] == per * 10 and sp["per_class"] == {c: per for c in m["classes"]}
        assert sum(s["count"] for s in sp["shards"]) == sp["count"]
        for s in sp["shards"]:
            p = tmp_path / "s" / s["name"]
            assert s["sha256"] == sha256_file(p) and s["bytes"] == p.stat().st_size
        recs = {r.key: r for r in src.records(split)}
        samples = _read_back(tmp_path / "s", split)
        assert sorted(x["__key__"] for x in samples) == sorted(recs)
        for x in samples:
            r = recs[x["__key__"]]
            assert int(x["cls"]) == r.label
            meta = json.loads(x["json"])
            assert (
                meta["source_path"] == str(r.path)
                and meta["size"] == [28, 28]
                and meta["class_name"] == m["classes"][r.label]
            )
            stored = _rgb(x["jpg"])
            ref = np.asarray(Image.open(r.path).convert("RGB"), dtype=np.int16)
            assert stored.shape == ref.shape == (28, 28, 3)  # never upscaled
            assert np.abs(stored - ref).mean() < 4.0  # JPEG q90 of the same pixels
    # the seeded shuffle mixes classes: every training shard holds several classes, and the
    # order is not the source order
    for p in shard_paths(tmp_path / "s", "train"):
        ds = wds.WebDataset(p, shardshuffle=False, empty_check=False)
        assert len({int(x["cls"]) for x in ds}) >= 5
    keys = [x["__key__"] for x in _read_back(tmp_path / "s", "train")]
    assert keys != sorted(keys)
    assert (tmp_path / "s" / "skipped.jsonl").read_text() == ""
    assert not (tmp_path / "s" / ".shard-state").exists()


def test_two_workers_write_the_same_shards_as_one(fm_tree, tmp_path):
    a = _shard(fm_tree, tmp_path / "a", shard_count=50, workers=1).manifest
    b = _shard(fm_tree, tmp_path / "b", shard_count=50, workers=2).manifest
    assert a["fingerprint"] == b["fingerprint"]
    assert [s["sha256"] for s in a["splits"]["train"]["shards"]] == [
        s["sha256"] for s in b["splits"]["train"]["shards"]
    ]
    c = _shard(fm_tree, tmp_path / "c", shard_count=50, seed=1).manifest
    assert c["fingerprint"] != a["fingerprint"]
    assert [s["sha256"] for s in c["splits"]["train"]["shards"]] != [
        s["sha256"] for s in a["splits"]["train"]["shards"]
    ]


def test_rerun_does_nothing_and_changes_are_refused(fm_tree, tmp_path, capsys):
    out = tmp_path / "s"
    first = _shard(fm_tree, out)
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = _shard(fm_tree, out, progress=True)
    assert again.nothing_to_do and "nothing to do" in again.summary()
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes
    with pytest.raises(UserError, match="another source or config.*--overwrite"):
        _shard(fm_tree, out, max_side=16)
    replaced = _shard(fm_tree, out, max_side=16, overwrite=True)
    assert replaced.manifest["fingerprint"] != first.manifest["fingerprint"]
    assert replaced.manifest["splits"]["train"]["count"] == 200
    x = _read_back(out, "val")[0]
    assert max(Image.open(io.BytesIO(x["jpg"])).size) == 16  # 28x28 -> 16x16
    # a changed source is detected too
    Image.open(next((fm_tree / "val" / "bag").iterdir())).save(tmp_path / "extra.png")
    (fm_tree / "val" / "bag" / "zz_extra.png").write_bytes((tmp_path / "extra.png").read_bytes())
    try:
        with pytest.raises(UserError, match="another source or config"):
            _shard(fm_tree, out, max_side=16)
    finally:
        (fm_tree / "val" / "bag" / "zz_extra.png").unlink()


def test_bad_inputs_are_skipped_with_reasons_and_reconciled(tmp_path):
    expected = build_bad_tree(tmp_path / "bad")
    res = _shard(tmp_path / "bad", tmp_path / "s", max_side=256)
    m = res.manifest
    rows = [json.loads(line) for line in (tmp_path / "s" / "skipped.jsonl").read_text().splitlines()]
    got = {os.path.relpath(r["path"], tmp_path / "bad"): r["reason"] for r in rows}
    want = {k: v for k, v in expected.items() if v is not None}
    assert set(got) == set(want)
    for k, reason in want.items():
        assert got[k].startswith(reason), (k, got[k])
    n_found = len(expected)  # hidden files and folders are not found at all
    assert res.found == n_found == res.written + res.skipped
    assert m["skipped"]["count"] == len(want) and sum(m["skipped"]["by_reason"].values()) == len(want)
    assert res.empty_classes == {"train": ["emptyclass"], "val": ["emptyclass"]}
    assert "emptyclass" in res.summary()
    samples = {x["__key__"]: x for x in _read_back(tmp_path / "s", "train")}
    assert set(samples) == {"good__rgb_small", "good__rgb_big", "good__grey", "good__cmyk", "good__png_named",
                            "odd__palette_transparent", "odd__rgba", "odd__sixteen_bit", "odd__exif_rotated"}
    for key, x in samples.items():
        im = Image.open(io.BytesIO(x["jpg"]))
        assert im.format == "JPEG" and im.mode == "RGB", key
        assert min(im.size) <= 256
    bad = tmp_path / "bad" / "train"
    # an RGB JPEG within the limit keeps its original bytes; everything else is re-encoded
    assert samples["good__rgb_small"]["jpg"] == (bad / "good" / "rgb_small.jpg").read_bytes()
    assert samples["good__grey"]["jpg"] != (bad / "good" / "grey.jpg").read_bytes()
    # smaller side 900 -> 256, never upscaled; EXIF orientation applied (200x120 stored, 120x200 shown)
    assert Image.open(io.BytesIO(samples["good__rgb_big"]["jpg"])).size == (341, 256)
    assert json.loads(samples["good__rgb_big"]["json"])["size"] == [1200, 900]
    rot = _rgb(samples["odd__exif_rotated"]["jpg"])
    ref = np.asarray(
        ImageOps.exif_transpose(Image.open(bad / "odd" / "exif_rotated.jpg")).convert("RGB"), dtype=np.int16
    )
    assert rot.shape == ref.shape == (200, 120, 3) and np.abs(rot - ref).mean() < 4
    # CMYK and the PNG named .JPEG decode by content to the right colours
    for key, name in (
        ("good__png_named", "png_named.JPEG"),
        ("good__cmyk", "cmyk.JPEG"),
        ("odd__sixteen_bit", "sixteen_bit.png"),
    ):
        ref = np.asarray(_decode_ref(bad, name), dtype=np.int16)
        assert np.abs(_rgb(samples[key]["jpg"]) - ref).mean() < 5, key
    # transparent pixels are composited on white (numpy alpha blend as the reference)
    pal = _rgb(samples["odd__palette_transparent"]["jpg"])
    rgba = np.asarray(Image.open(bad / "odd" / "palette_transparent.png").convert("RGBA"), dtype=np.float64)
    a = rgba[..., 3:] / 255.0
    ref = rgba[..., :3] * a + 255.0 * (1 - a)
    assert np.abs(pal - ref).mean() < 5
    assert (a[:, :60] == 0).all() and pal[:, :48].mean() > 252  # the transparent block is white


def _decode_ref(bad, name):
    path = next(bad.rglob(name))
    im = Image.open(path)
    if im.mode.startswith("I;16"):
        return np.stack([np.asarray(im, dtype=np.float64) / 257.0] * 3, axis=-1).round()
    return np.asarray(im.convert("RGB"))


def test_pixel_limit_is_configurable(tmp_path):
    build_bad_tree(tmp_path / "bad")
    res = _shard(tmp_path / "bad", tmp_path / "s", max_pixels=1_000_000, splits=["train"])
    rows = [json.loads(line) for line in (tmp_path / "s" / "skipped.jsonl").read_text().splitlines()]
    assert any(r["key"] == "good__rgb_big" and r["reason"].startswith("too many pixels") for r in rows)
    assert "val" not in res.manifest["splits"]


def test_voc_boxes_rescaled_with_the_image(tmp_path):
    build_voc(tmp_path)
    res = _shard(tmp_path / "VOCdevkit", tmp_path / "s", max_side=60)
    m = res.manifest
    assert m["source"]["kind"] == "voc" and m["label_kind"] == "multi"
    assert m["splits"]["trainval"]["per_class"]["car"] == 1  # 000007 (000012 has only a difficult car)
    for split in ("trainval", "test"):
        for x in _read_back(tmp_path / "s", split):
            assert "cls" not in x  # multi-label: no class index
            meta = json.loads(x["json"])
            objs = VOC_IMAGES[x["__key__"]]
            assert Image.open(io.BytesIO(x["jpg"])).size == (80, 60) == tuple(meta["stored_size"])
            assert meta["size"] == [160, 120]
            for b, (name, box, diff) in zip(meta["boxes"], objs, strict=False):
                assert (b["name"], b["difficult"]) == (name, bool(diff))
                assert [b["xmin"], b["ymin"], b["xmax"], b["ymax"]] == pytest.approx([v / 2 for v in box])
            assert len(meta["labels"]) == 20


def test_ilsvrc_shards_hold_every_image_with_its_wnid(tmp_path):
    info = build_ilsvrc(tmp_path / "inet")
    res = _shard(tmp_path / "inet", tmp_path / "s", max_side=100, workers=2)
    m = res.manifest
    assert m["source"]["kind"] == "ilsvrc" and m["classes"][3] == "n02119789"
    train = {x["__key__"]: x for x in _read_back(tmp_path / "s", "train")}
    assert set(train) == set(info["train"])  # includes the PNG named .JPEG, the CMYK JPEG, tar members
    for k, x in train.items():
        meta = json.loads(x["json"])
        assert m["classes"][int(x["cls"])] == meta["wnid"] == k.split("_")[0]
    val = sorted(_read_back(tmp_path / "s", "val"), key=lambda x: x["__key__"])
    assert [m["classes"][int(x["cls"])] for x in val] == info["val_wnids"]
    b = json.loads(val[0]["json"])["boxes"][0]  # 200x150 -> 133x100: boxes scaled by 100/150
    assert b["xmin"] == pytest.approx(20.5 * 133 / 200, abs=0.01) and b["ymax"] == pytest.approx(
        100 * 100 / 150, abs=0.01
    )


def test_shard_limits_by_count_and_bytes(fm_tree, tmp_path):
    m = _shard(fm_tree, tmp_path / "a", shard_count=7, splits=["val"]).manifest
    counts = [s["count"] for s in m["splits"]["val"]["shards"]]
    assert max(counts) == 7 and sum(counts) == 50 and len(counts) == 8
    m = _shard(fm_tree, tmp_path / "b", shard_bytes=1 << 16, splits=["val:test"]).manifest
    shards = m["splits"]["test"]["shards"]
    assert len(shards) > 1 and all(s["bytes"] <= (1 << 16) + 10240 for s in shards)
    assert [p.rsplit("/", 1)[1] for p in shard_paths(tmp_path / "b", "test")][0] == "test-000000.tar"


def test_caltech_split_renamed_for_training(tmp_path):
    build_caltech256(tmp_path / "c")
    m = _shard(tmp_path / "c", tmp_path / "s", splits=["all:train"]).manifest
    assert list(m["splits"]) == ["train"] and m["splits"]["train"]["count"] == 8
    with pytest.raises(UserError, match="no split 'val'"):
        _shard(tmp_path / "c", tmp_path / "t", splits=["val"])
