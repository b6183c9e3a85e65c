"""Writing shards safely: one run per folder, a dead run's leftovers cleaned, hostile keys and lists refused or escaped.

A named pipe (FIFO) stands in for a slow image: ``vgg shard`` blocks reading it while holding its
folder lock, so the tests can start a second run, or kill the first, at a known point.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

import pipeline
from pipeline.errors import UserError
from pipeline.locks import folder_lock
from pipeline.shards import iter_samples, read_manifest
from tests.helpers.cli import refused, vgg

ROOT = Path(pipeline.__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def pngs(tmp_path_factory) -> list[tuple[Path, str]]:
    """12 Fashion-MNIST images as PNG files with their class names."""
    from pipeline.shipped.fashion_mnist import CLASSES, load_split

    x, y = load_split("t10k")
    d = tmp_path_factory.mktemp("png")
    out = []
    for i in range(12):
        p = d / f"im{i}.png"
        Image.fromarray(x[i], "L").save(p)
        out.append((p, CLASSES[int(y[i])]))
    return out


def _csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=sorted({k for r in rows for k in r}))
        w.writeheader()
        w.writerows(rows)
    return path


def _blocking_list(tmp_path: Path, pngs) -> tuple[Path, Path]:
    """A CSV list of the PNGs whose 7th image is a FIFO: reading it blocks until the test writes it."""
    fifo = tmp_path / "slow.png"
    os.mkfifo(fifo)
    rows = [{"path": str(p), "label": c} for p, c in pngs]
    rows[6]["path"] = str(fifo)
    return _csv(tmp_path / "list.csv", rows), fifo


def _feed(fifo: Path, data: bytes) -> threading.Thread:
    def run():
        with open(fifo, "wb") as fh:  # blocks until the shard run opens the pipe
            fh.write(data)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _start(src: Path, out: Path) -> subprocess.Popen:
    """``vgg shard`` in another process (no shuffle, 2 samples per shard, the worker in-process)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "pipeline", "shard", str(src), str(out), "--shard-count", "2",
                             "--workers", "1", "--set", "shuffle=false"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_locked(out: Path, proc: subprocess.Popen) -> None:
    """Until ``proc`` holds the folder lock and blocks on the FIFO (7th image): shards 0 and 1 written, 2 open."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if (out / ".lock").exists() and list(out.glob(".all-000002.tar.*.tmp")):
            try:
                with folder_lock(out, "probe"):
                    pass
            except UserError:
                return
        time.sleep(0.05)
    raise AssertionError("the first run never took the lock")


def test_concurrent_shard_runs_second_refused(pngs, tmp_path, capsys):
    src, fifo = _blocking_list(tmp_path, pngs)
    out = tmp_path / "out"
    first = _start(src, out)
    try:
        _wait_locked(out, first)
        before = sorted(p.name for p in out.iterdir())
        refused(vgg(["shard", str(src), str(out), "--shard-count", "2", "--workers", "1", "--set", "shuffle=false"],
                      capsys), str(out), "another run")
        assert sorted(p.name for p in out.iterdir()) == before  # the second run touched nothing
        _feed(fifo, pngs[6][0].read_bytes())
        assert first.wait(120) == 0, first.communicate()
    finally:
        first.kill()
        first.wait()
    assert not list(out.glob(".*.tmp")) and len(list(iter_samples(out, "all"))) == 12
    code, o, e = vgg(["verify", str(out), "--hash", "--workers", "1"], capsys)
    assert code == 0 and "12 samples" in o


def test_killed_run_leftovers_cleaned_by_the_next_run(pngs, tmp_path, capsys):
    src, fifo = _blocking_list(tmp_path, pngs)
    out = tmp_path / "out"
    first = _start(src, out)
    try:
        _wait_locked(out, first)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    stale = list(out.glob(".all-*.tar.*.tmp"))
    assert stale  # the dead run's half-written shard
    feeder = _feed(fifo, pngs[6][0].read_bytes())
    code, o, e = vgg(["shard", str(src), str(out), "--shard-count", "2", "--workers", "1", "--set", "shuffle=false"],
                      capsys)
    feeder.join(10)
    assert code == 0 and "resumed" in o, e
    assert not any(p.exists() for p in stale) and not list(out.rglob(".*.tmp"))
    keys = [s["__key__"] for s in iter_samples(out, "all")]
    assert len(keys) == 12 == len(set(keys))
    assert vgg(["verify", str(out), "--hash", "--workers", "1"], capsys)[0] == 0


def test_path_like_keys_never_reach_member_names(pngs, tmp_path, capsys):
    hostile = ["/etc/passwd", "../../up", "a\nb", "back\\slash", "ok", "tab\there", "\u202eevil", ""]
    rows = [{"path": str(p), "label": c, "key": k} for (p, c), k in zip(pngs, hostile, strict=False)]
    rows[-1].pop("key")  # no key: derived from the path
    src = _csv(tmp_path / "list.csv", rows)
    out = tmp_path / "out"
    code, o, e = vgg(["shard", str(src), str(out), "--workers", "1"], capsys)
    assert code == 0, e
    with tarfile.open(out / "all-000000.tar") as tf:
        names = tf.getnames()
    assert len(names) == 3 * len(hostile)
    for n in names:
        assert not n.startswith("/") and ".." not in n and "/" not in n and "\\" not in n
        assert n.isprintable() and n.count(".") == 1
    keys = {s["__key__"] for s in iter_samples(out, "all")}
    assert {"_etc_passwd", "______up", "a_b", "back_slash", "ok", "tab_here", "_evil"} <= keys


def test_missing_label_is_a_recorded_skip(pngs, tmp_path, capsys):
    rows = [{"path": str(p), "label": c} for p, c in pngs]
    rows[3]["label"] = ""  # an empty CSV cell: no label
    src = _csv(tmp_path / "list.csv", rows)
    out = tmp_path / "out"
    code, o, e = vgg(["shard", str(src), str(out), "--workers", "1"], capsys)
    assert code == 0 and "11 samples written, 1 skipped" in o and "no label" in o
    skipped = [json.loads(ln) for ln in (out / "skipped.jsonl").read_text().splitlines()]
    assert [(s["path"], s["reason"].split(" (")[0]) for s in skipped] == [(str(pngs[3][0]), "no label")]
    assert all(s["cls"] is not None for s in iter_samples(out, "all"))


def test_unlabelled_shards_refused_by_train(pngs, tmp_path, capsys):
    src = _csv(tmp_path / "list.csv", [{"path": str(p)} for p, _ in pngs])
    out = tmp_path / "out"
    assert vgg(["shard", str(src), str(out), "--workers", "1", "--split", "all:train"], capsys)[0] == 0
    assert vgg(["stats", str(out), "--workers", "1"], capsys)[0] == 0
    cfg = {"out": str(tmp_path / "run"), "model": {"config": "A", "num_classes": 10, "width": 0.125, "fc_width": 32,
                                                  "crop": 32, "dropout": 0.0},
           "data": {"shards": str(out), "val_split": "train", "scale": {"s_min": 32, "s_max": 32}, "workers": 0,
                    "shuffle_buffer": 4},
           "optim": {"lr": 0.003, "batch_size": 4}, "schedule": {"max_epochs": 1}, "init": {"method": "glorot"},
           "runtime": {"bf16": False, "channels_last": False, "threads": 1}, "checkpoint_every": 0}
    import yaml

    (tmp_path / "t.yaml").write_text(yaml.safe_dump(cfg))
    res = vgg(["train", "--config", str(tmp_path / "t.yaml")], capsys)
    assert "KeyError" not in res[2]
    refused(res)


@pytest.mark.parametrize("case", ["path_number", "not_utf8", "label_list"])
def test_bad_manifest_lists_are_one_line(pngs, tmp_path, capsys, case):
    p, c = pngs[0]
    if case == "path_number":
        src = tmp_path / "list.jsonl"
        src.write_text(json.dumps({"path": str(p), "label": c}) + "\n" + json.dumps({"path": 5, "label": c}) + "\n")
        needles = ("list.jsonl:2", "'path' must be a non-empty string")
    elif case == "not_utf8":
        src = tmp_path / "list.csv"
        src.write_bytes(f"path,label\n{p},{c}\n{p},caf\xe9\n".encode("latin-1"))
        needles = ("list.csv", "not UTF-8")
    else:
        src = tmp_path / "list.jsonl"
        src.write_text(json.dumps({"path": str(p), "label": [c]}) + "\n")
        needles = ("list.jsonl:1", "'label' must be a class name")
    refused(vgg(["shard", str(src), str(tmp_path / "out"), "--workers", "1"], capsys), *needles)
    assert not (tmp_path / "out").exists()


def test_output_folder_is_a_file(pngs, tmp_path, capsys):
    src = _csv(tmp_path / "list.csv", [{"path": str(p), "label": c} for p, c in pngs])
    (tmp_path / "out").write_text("not a folder")
    refused(vgg(["shard", str(src), str(tmp_path / "out"), "--workers", "1"], capsys), "is a file")


def test_verified_shards_round_trip_unchanged(tmp_path, capsys):
    from pipeline.shipped.fashion_mnist import prepare_fashion_mnist

    tree = prepare_fashion_mnist(tmp_path / "fm", train_per_class=4, val_per_class=2)
    out = tmp_path / "shards"
    assert vgg(["shard", str(tree), str(out), "--shard-count", "7", "--workers", "1"], capsys)[0] == 0
    code, o, e = vgg(["verify", str(out), "--hash", "--workers", "1"], capsys)
    assert code == 0 and "60 samples in 9 shards" in o, o + e
    m = read_manifest(out)
    classes = m["classes"]
    for split, n in (("train", 40), ("val", 20)):
        ours = list(iter_samples(out, split))
        # an independent reader (webdataset's tarfile-based one) sees the same samples, bytes for bytes
        urls = [{"url": str(out / s["name"])} for s in m["splits"][split]["shards"]]
        ref = list(wds.tarfile_to_samples()(iter(urls)))
        assert [(s["__key__"], s["jpg"], s["cls"]) for s in ours] == [
            (r["__key__"], r["jpg"], int(r["cls"])) for r in ref]
        assert len(ours) == n
        files = {f"{f.parent.name}__{f.stem}": f for f in (tree / split).rglob("*.png")}
        assert {s["__key__"] for s in ours} == set(files)
        for s in ours:
            src = files[s["__key__"]]
            assert classes[s["cls"]] == src.parent.name
            a = np.asarray(Image.open(io.BytesIO(s["jpg"])).convert("L"), dtype=np.float64)
            b = np.asarray(Image.open(src).convert("L"), dtype=np.float64)
            assert a.shape == b.shape and np.abs(a - b).mean() < 4  # JPEG quality 90 of the same pixels


def test_damaged_manifest_in_the_output_folder(pngs, tmp_path, capsys):
    src = _csv(tmp_path / "list.csv", [{"path": str(p), "label": c} for p, c in pngs])
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text('{"format": "vgg-shards/1", "splits": {"all": {"count": 1, "shards": '
                                       '[{"name": "../../elsewhere.tar", "count": 1, "bytes": 0}]}}, "classes": []}')
    refused(vgg(["shard", str(src), str(out), "--workers", "1"], capsys), "shard name", "--overwrite")
    code, o, e = vgg(["shard", str(src), str(out), "--workers", "1", "--overwrite"], capsys)
    assert code == 0 and "12 samples written" in o
