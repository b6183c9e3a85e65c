"""The CLI's one error boundary (issue 14, point 6): ordinary mistakes end in one line ``error: ...``
with exit status 2 and no traceback; a bug exits 1, its traceback shown only with ``--debug``.

Every failure here is real: real files, a real read-only or full filesystem (tmpfs, as root), a
real DataLoader worker process that raises.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from tests.helpers.cli import vgg
from tests.helpers.stores import tmpfs


def assert_one_line(code: int, err: str, needle: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("error: ") and needle in lines[-1], err


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """A small Fashion-MNIST ImageFolder tree (3 training, 1 validation image per class)."""
    from pipeline.shipped.fashion_mnist import prepare_fashion_mnist

    return prepare_fashion_mnist(tmp_path_factory.mktemp("fm") / "fm", train_per_class=3, val_per_class=1)


@pytest.fixture(scope="module")
def shards(tree, tmp_path_factory) -> Path:
    from pipeline.shards import ShardConfig, run_shard

    out = tmp_path_factory.mktemp("shards") / "s"
    run_shard(ShardConfig(source=str(tree), out=str(out), workers=1, progress=False))
    return out


def test_output_folder_that_is_a_file(tree, shards, tmp_path, capsys):
    a_file = tmp_path / "taken"
    a_file.write_text("not a folder\n")
    code, _, err = vgg(["shard", tree, a_file, "--workers", "1"], capsys)
    assert_one_line(code, err, str(a_file))
    code, _, err = vgg(["stats", shards, "--workers", "1"], capsys)  # fine: a control
    assert code == 0, err
    ckpt_out = a_file / "run"  # a path under a file
    code, _, err = vgg(["train", "--set", f"data.shards={shards}", "--out", ckpt_out, "--set", "model.num_classes=10",
                        "--optim.batch-size", "10", "--model.crop", "32", "--model.width", "0.125"], capsys)
    assert_one_line(code, err, "Not a directory")


def test_read_only_output_folder(tree, tmp_path, capsys):
    # root ignores mode bits; a read-only filesystem it cannot ignore
    with tmpfs(tmp_path / "mnt", "1m", read_only=True) as mount_point:
        code, _, err = vgg(["shard", tree, mount_point / "s", "--workers", "1"], capsys)
        assert_one_line(code, err, "Read-only file system")
        assert not any(mount_point.iterdir())


def test_full_disk_while_sharding(tree, tmp_path, capsys):
    with tmpfs(tmp_path / "mnt", "64k") as mount_point:
        code, _, err = vgg(["shard", tree, mount_point / "s", "--workers", "1", "--shard-count", "4"], capsys)
        assert_one_line(code, err, os.strerror(errno.ENOSPC))
        assert not (mount_point / "s" / "manifest.json").exists()  # nothing that looks complete


def test_invalid_manifest_json(shards, tmp_path, capsys):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(shards, bad)
    (bad / "manifest.json").write_text('{"format": "vgg-shards", "splits": {')  # cut short
    for argv in (["stats", bad, "--workers", "1"], ["inspect", bad],
                 ["train", "--shards", bad, "--out", tmp_path / "run", "--model.num-classes", "10"]):
        code, _, err = vgg(argv, capsys)
        assert_one_line(code, err, "manifest.json: not valid JSON")
    (bad / "manifest.json").write_bytes(b'{"format": "\xff\xfe"}')  # not UTF-8
    code, _, err = vgg(["inspect", bad], capsys)
    assert_one_line(code, err, "UTF-8")


def test_malformed_yaml_preset_names_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("out: runs/x\ndata: {shards: [1,\n")
    code, _, err = vgg(["train", "--config", bad], capsys)
    assert_one_line(code, err, str(bad))
    assert "line" in err
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    code, _, err = vgg(["train", "--config", tmp_path / "list.yaml"], capsys)
    assert_one_line(code, err, "mapping")


def test_bad_set_value_names_the_key(capsys):
    code, _, err = vgg(["train", "--config", "fmnist-a", "--set", "x=[1,"], capsys)
    assert_one_line(code, err, "--set x:")
    code, _, err = vgg(["evaluate", "--set", "scales=[256,", "--data", "x"], capsys)
    assert_one_line(code, err, "--set scales:")
    code, _, err = vgg(["train", "--config", "fmnist-a", "--set", "optim.lr=fast"], capsys)
    assert_one_line(code, err, "optim.lr")


def test_invalid_option_value_names_the_option(capsys):
    code, _, err = vgg(["evaluate", "x.pt", "--data", "d", "--scales", "256,big"], capsys)
    assert_one_line(code, err, "--scales: expected integers")
    code, _, err = vgg(["train", "--config", "fmnist-a", "--optim.lr", "-1"], capsys)
    assert_one_line(code, err, "--optim.lr: Input should be greater than 0")
    code, _, err = vgg(["train", "--no-such-option"], capsys)
    assert_one_line(code, err, "No such option")


def _corrupt_first_image(shard: Path) -> str:
    """Overwrite the image bytes of the shard's first sample in place (the tar stays valid)."""
    with tarfile.open(shard) as tf:
        member = next(m for m in tf.getmembers() if m.name.endswith(".jpg"))
    with open(shard, "r+b") as fh:
        fh.seek(member.offset_data)
        fh.write(b"\x00garbage" * (member.size // 8) + b"\x00" * (member.size % 8))
    return member.name.rsplit(".", 1)[0]


def test_user_error_in_a_loader_worker_is_one_line(shards, tmp_path, capsys):
    import shutil

    data = tmp_path / "shards"
    shutil.copytree(shards, data)
    key = _corrupt_first_image(sorted(data.glob("train-*.tar"))[0])
    cfg = {"out": str(tmp_path / "run"), "model": {"config": "A", "num_classes": 10, "width": 0.125, "fc_width": 16,
                                                   "crop": 32},
           "data": {"shards": str(data), "scale": {"s_min": 32, "s_max": 32}, "workers": 1, "val_split": None,
                    "shuffle_buffer": 0, "colour_shift": 0.0, "mean": [128, 128, 128]},
           "optim": {"batch_size": 30}, "schedule": {"max_epochs": 1}, "runtime": {"bf16": False, "threads": 1},
           "checkpoint_every": 0, "progress": False}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    code, _, err = vgg(["train", "--config", tmp_path / "c.yaml"], capsys)
    assert_one_line(code, err, f"training sample {key}")
    assert "DataLoader worker" not in err and err.count("\n") == 1, err


BUG = ("import sys; from pipeline.cli import app, main; "
       "app.command('boom')(lambda: {}['missing']); main(['boom', *sys.argv[1:]])")


@pytest.mark.parametrize("debug", ["", "--debug", "VGG_DEBUG=1"])
def test_internal_bug_exits_1_traceback_only_with_debug(debug):
    env = {**os.environ, "VGG_DEBUG": "1" if debug == "VGG_DEBUG=1" else ""}
    args = ["--debug"] if debug == "--debug" else []
    r = subprocess.run([sys.executable, "-c", BUG, *args], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("internal error: KeyError") and "Traceback" not in last
    assert ("Traceback" in r.stderr) == bool(debug), r.stderr
    if not debug:
        assert "--debug" in last and len(r.stderr.strip().splitlines()) == 1


def test_damaged_files_are_one_line(shards, tmp_path, capsys):
    import shutil

    noise = os.urandom(4096)
    (tmp_path / "f.h5").write_bytes(noise)
    (tmp_path / "m.pt").write_bytes(noise)
    for argv in (["inspect", tmp_path / "f.h5"], ["inspect", tmp_path / "m.pt"],
                 ["transfer", tmp_path / "f.h5", "--protocol", "caltech101", "--out", tmp_path / "t"]):
        code, _, err = vgg(argv, capsys)
        assert_one_line(code, err, "")
    data = tmp_path / "shards"
    shutil.copytree(shards, data)
    manifest = json.loads((data / "manifest.json").read_text())
    manifest.pop("stats", None)  # not computed yet (saved statistics are reused without reading the shards)
    (data / "manifest.json").write_text(json.dumps(manifest))
    shard = sorted(data.glob("train-*.tar"))[0]
    shard.write_bytes(noise[:512] * (shard.stat().st_size // 512))  # same size, not a tar
    for argv in (["stats", data, "--workers", "1"], ["inspect", data]):
        code, _, err = vgg(argv, capsys)
        assert_one_line(code, err, "")
