"""Damaged shards are refused with one line by every reader: evaluate, extract, stats, train, inspect, verify.

Shards are written by ``vgg shard`` from the shipped Fashion-MNIST images, then damaged the way
disks, copies and foreign tools damage them: cut in half, a flipped size digit in a header in the
middle of the shard, a header announcing gigabytes, a sample whose files are not adjacent, a key
that repeats, and a manifest naming shards outside the folder. Each command must exit 2 with one
``error: ...`` line naming the shard and no traceback; before these checks, ``tarfile`` read such
shards as shorter archives and the commands exited 0 on half the samples.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest
import yaml

from pipeline.cli import main
from pipeline.io import sha256_file
from tests.helpers.cli import refused, vgg

VAL = "val-000000.tar"  # 20 samples (the second val shard holds 10)
TRAIN = "train-000000.tar"


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    """Shards written by ``vgg shard`` (and ``vgg stats``): 60 train images in 3 shards, 30 val images in 2."""
    from pipeline.shipped.fashion_mnist import prepare_fashion_mnist

    root = tmp_path_factory.mktemp("faults")
    tree = prepare_fashion_mnist(root / "fm", train_per_class=6, val_per_class=3)
    main_ok(["shard", str(tree), str(root / "shards"), "--shard-count", "20", "--workers", "1"])
    main_ok(["stats", str(root / "shards"), "--workers", "1"])  # training needs the mean RGB
    return root / "shards"


def main_ok(argv: list[str]) -> None:
    try:
        main(argv)
    except SystemExit as e:
        assert not e.code, argv


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A tiny net (A, width 1/8, crop 32) with the checkpoint meta evaluate and extract need."""
    from pipeline.models import build_model, init_weights, save_checkpoint
    from pipeline.shipped.fashion_mnist import CLASSES

    net = init_weights(build_model(config="A", width=0.125, crop=32, fc_width=32, num_classes=10), "glorot", seed=0)
    meta = {"normalization": {"mean": [72.9] * 3, "std": [90.0] * 3}, "train_scale": {"s_min": 32, "s_max": 32},
            "classes": sorted(CLASSES)}
    return save_checkpoint(tmp_path_factory.mktemp("ck") / "a.pt", net, meta=meta)


def _copy(good: Path, tmp_path: Path) -> Path:
    d = tmp_path / "shards"
    shutil.copytree(good, d)
    return d


def _headers(path: Path) -> list[int]:
    """Byte offsets of the member headers of a tar, in order."""
    with tarfile.open(path) as tf:
        return [m.offset for m in tf.getmembers()]


def _set_size(path: Path, offset: int, size: int, fix_checksum: bool) -> None:
    """Write ``size`` into the size field of the header at ``offset`` (optionally with a valid checksum)."""
    data = bytearray(path.read_bytes())
    h = data[offset:offset + 512]
    h[124:136] = b"%011o\0" % size
    if fix_checksum:
        h[148:156] = b" " * 8
        h[148:156] = b"%06o\0 " % sum(h)
    data[offset:offset + 512] = h
    path.write_bytes(bytes(data))


def _rewrite(path: Path, order) -> None:
    """Rewrite a shard's members in a new order (``order``: list of members -> list of (name, bytes))."""
    with tarfile.open(path) as tf:
        members = [(m.name, tf.extractfile(m).read()) for m in tf.getmembers()]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in order(members):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    path.write_bytes(buf.getvalue())


def _update_manifest(d: Path, name: str, **fields) -> None:
    """The manifest entry of shard ``name`` updated (as a tool that re-packed the shard would)."""
    m = json.loads((d / "manifest.json").read_text())
    for sp in m["splits"].values():
        for s in sp["shards"]:
            if s["name"] == name:
                s.update({"bytes": (d / name).stat().st_size, "sha256": sha256_file(d / name)}, **fields)
    (d / "manifest.json").write_text(json.dumps(m))


def _readers(d: Path, ckpt: Path, tmp_path: Path, split: str) -> dict[str, list[str]]:
    """The cheapest invocation of each reading command on split ``split`` of shard folder ``d``."""
    return {
        "evaluate": ["evaluate", str(ckpt), "--data", str(d), "--split", split, "--method", "dense", "--scales", "32",
                     "--out", str(tmp_path / "eval"), "--threads", "1"],
        "extract": ["extract", str(ckpt), "--data", str(d), "--split", split, "--out", str(tmp_path / "f.h5"),
                    "--scales", "32", "--quiet"],
        "stats": ["stats", str(d), "--split", split, "--workers", "1"],
        "verify": ["verify", str(d), "--workers", "1"],
    }


def _train(d: Path, tmp_path: Path) -> list[str]:
    cfg = {"out": str(tmp_path / "run"),
           "model": {"config": "A", "num_classes": 10, "width": 0.125, "fc_width": 32, "crop": 32, "dropout": 0.0},
           "data": {"shards": str(d), "scale": {"s_min": 32, "s_max": 32}, "workers": 0, "shuffle_buffer": 8},
           "optim": {"lr": 0.003, "batch_size": 10}, "schedule": {"max_epochs": 1}, "init": {"method": "glorot"},
           "runtime": {"bf16": False, "channels_last": False, "threads": 1}, "checkpoint_every": 0}
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(cfg))
    return ["train", "--config", str(tmp_path / "train.yaml")]


@pytest.mark.parametrize("command", ["evaluate", "extract", "stats", "verify"])
def test_truncated_shard(good, ckpt, tmp_path, capsys, command):
    d = _copy(good, tmp_path)
    full = (d / VAL).stat().st_size
    with open(d / VAL, "r+b") as fh:
        fh.truncate(full // 2)
    refused(vgg(_readers(d, ckpt, tmp_path, "val")[command], capsys), VAL, "the manifest says")


def test_truncated_shard_stops_training(good, tmp_path, capsys):
    d = _copy(good, tmp_path)
    with open(d / TRAIN, "r+b") as fh:
        fh.truncate((d / TRAIN).stat().st_size // 2)
    refused(vgg(_train(d, tmp_path), capsys), TRAIN, "the manifest says")
    assert not (tmp_path / "run" / "checkpoints" / "best.pt").exists()


def test_truncated_shard_with_its_manifest_entry_updated_is_still_refused(good, tmp_path, capsys):
    # the size check cannot see this: the reader finds the cut inside a member
    d = _copy(good, tmp_path)
    with open(d / VAL, "r+b") as fh:
        fh.truncate((d / VAL).stat().st_size // 2 + 100)
    _update_manifest(d, VAL)
    refused(vgg(["stats", str(d), "--split", "val", "--workers", "1"], capsys), VAL, "truncated")


@pytest.mark.parametrize("command", ["evaluate", "extract", "stats", "train", "verify"])
def test_corrupted_size_field_mid_shard(good, ckpt, tmp_path, capsys, command):
    d = _copy(good, tmp_path)
    name = TRAIN if command == "train" else VAL
    offset = _headers(d / name)[31]  # a member of the 11th sample
    data = bytearray((d / name).read_bytes())
    assert data[offset + 124:offset + 135].isdigit()
    data[offset + 133] = ord("7") if data[offset + 133] != ord("7") else ord("1")  # one digit of the size changes
    (d / name).write_bytes(bytes(data))  # same file size: only the header is wrong
    argv = _train(d, tmp_path) if command == "train" else _readers(d, ckpt, tmp_path, "val")[command]
    refused(vgg(argv, capsys), name, f"bad tar header at byte {offset}")


@pytest.mark.parametrize("command", ["evaluate", "stats", "verify"])
def test_oversized_header_size_is_bounded_by_the_file(good, ckpt, tmp_path, capsys, command):
    d = _copy(good, tmp_path)
    offset = _headers(d / VAL)[13]
    huge = 0o77777777777  # the largest ustar size field: 8 GiB - 1
    _set_size(d / VAL, offset, huge, fix_checksum=True)  # a header with a valid checksum announcing 8 GB
    msg = refused(vgg(_readers(d, ckpt, tmp_path, "val")[command], capsys), VAL)
    assert f"announces {huge} bytes, only" in msg


def test_files_of_a_sample_not_adjacent(good, ckpt, tmp_path, capsys):
    d = _copy(good, tmp_path)

    def swap(members):  # sample 2's .json written after sample 3's files
        m = list(members)
        m.insert(11, m.pop(8))
        return m

    _rewrite(d / VAL, swap)
    _update_manifest(d, VAL)
    with tarfile.open(d / VAL) as tf:
        moved = tf.getnames()[11]
    key = moved.rsplit(".", 1)[0]
    for command in ("evaluate", "stats", "verify"):
        refused(vgg(_readers(d, ckpt, tmp_path, "val")[command], capsys), VAL, f"file {moved}",
                 repr(key), "not adjacent")


def test_repeated_key(good, ckpt, tmp_path, capsys):
    d = _copy(good, tmp_path)

    def repeat(members):  # the last sample takes the key of the first
        m = list(members)
        first = m[0][0].split(".")[0]
        last = m[-1][0].split(".")[0]
        return m[:-3] + [(name.replace(last, first), data) for name, data in m[-3:]]

    _rewrite(d / VAL, repeat)
    _update_manifest(d, VAL)
    with tarfile.open(d / VAL) as tf:
        first = tf.getnames()[0]
    for command in ("evaluate", "extract", "stats", "verify"):
        refused(vgg(_readers(d, ckpt, tmp_path, "val")[command], capsys), VAL, f"file {first}",
                 repr(first.split(".")[0]), "repeats")


def test_count_differs_from_the_manifest(good, ckpt, tmp_path, capsys):
    d = _copy(good, tmp_path)
    _rewrite(d / VAL, lambda m: list(m)[:-3])  # one sample less, re-packed: a valid tar
    _update_manifest(d, VAL)
    for command in ("evaluate", "stats", "verify"):
        refused(vgg(_readers(d, ckpt, tmp_path, "val")[command], capsys), VAL,
                 "19 samples read, the manifest says 20")


@pytest.mark.parametrize("name", ["../../x.tar", "/etc/x.tar", "sub/val-000000.tar", "..tar", ".hidden.tar"])
def test_path_like_shard_names_in_the_manifest(good, ckpt, tmp_path, capsys, name):
    d = _copy(good, tmp_path)
    m = json.loads((d / "manifest.json").read_text())
    m["splits"]["val"]["shards"][0]["name"] = name
    (d / "manifest.json").write_text(json.dumps(m))
    for command in ("evaluate", "stats", "verify"):
        refused(vgg(_readers(d, ckpt, tmp_path, "val")[command], capsys), "shard name", repr(name))
    refused(vgg(["inspect", str(d)], capsys), "shard name")


def test_invalid_manifest_json(good, ckpt, tmp_path, capsys):
    d = _copy(good, tmp_path)
    (d / "manifest.json").write_text('{"format": "vgg-shards/1", "splits": ')
    refused(vgg(_readers(d, ckpt, tmp_path, "val")["stats"], capsys), "manifest.json", "not valid JSON")
    refused(vgg(["inspect", str(d)], capsys), "not valid JSON")
    refused(vgg(_readers(d, ckpt, tmp_path, "val")["evaluate"], capsys), "not valid JSON")


def test_verify_hash_finds_a_flipped_byte_the_default_check_cannot(good, tmp_path, capsys):
    d = _copy(good, tmp_path)
    with tarfile.open(d / VAL) as tf:
        jpg = next(m for m in tf.getmembers() if m.name.endswith(".jpg"))
    data = bytearray((d / VAL).read_bytes())
    data[jpg.offset_data + jpg.size // 2] ^= 0x10  # inside an image: headers, size and count intact
    (d / VAL).write_bytes(bytes(data))
    code, o, e = vgg(["verify", str(d), "--workers", "1"], capsys)
    assert code == 0 and "90 samples in 5 shards" in o  # sizes and counts still match
    refused(vgg(["verify", str(d), "--hash", "--workers", "1"], capsys), VAL, "sha256")


def test_verify_hash_finds_an_image_that_does_not_decode(good, tmp_path, capsys):
    d = _copy(good, tmp_path)

    def garble(members):  # the 5th sample's JPEG replaced by text, re-packed (the manifest updated to match)
        m = list(members)
        m[13] = (m[13][0], b"this is not a JPEG") if m[13][0].endswith(".jpg") else m[13]
        return m

    _rewrite(d / VAL, garble)
    _update_manifest(d, VAL)
    with tarfile.open(d / VAL) as tf:
        assert tf.getnames()[13].endswith(".jpg")
        key = tf.getnames()[13].rsplit(".", 1)[0]
    assert vgg(["verify", str(d), "--workers", "1"], capsys)[0] == 0
    refused(vgg(["verify", str(d), "--hash", "--workers", "1"], capsys), VAL, repr(key), "does not decode")
