"""``vgg shard --part i/n`` in separate processes, then ``--merge``: the one-process shard folder (paper 3.1)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import webdataset as wds

from pipeline.cli import main
from pipeline.shards import ShardConfig, read_manifest, run_shard, shard_paths
from pipeline.shards.parts import MERGE_STATE, PART_RECORD, PARTS_DIR, part_block, part_dir, plan_merge
from pipeline.shards.writer import open_shard_job
from tests.helpers.layouts import build_bad_tree

VGG = str(Path(sys.executable).with_name("vgg"))


@pytest.fixture(scope="module")
def small_tree(tmp_path_factory):
    """Fashion-MNIST as an ImageFolder tree: 6 train and 2 val PNGs per class (80 images)."""
    from pipeline.shipped.fashion_mnist import prepare_fashion_mnist

    return prepare_fashion_mnist(tmp_path_factory.mktemp("fm-parts") / "fashion", 6, 2)


def _cfg(src, out, **kw) -> ShardConfig:
    return ShardConfig(**{"source": str(src), "out": str(out), "workers": 1, "progress": False, **kw})


def _vgg(argv: list[str], capsys) -> tuple[int, str]:
    """(exit code, what the command printed: the summary on stdout, progress and errors on stderr)."""
    code = 0
    try:
        main(argv)
    except SystemExit as e:
        code = e.code or 0
    printed = capsys.readouterr()
    return code, printed.out + printed.err


def _samples(out: Path, split: str) -> list[tuple[str, int, str]]:
    """(key, label, sha256 of the image bytes) of every sample, in shard order, read with webdataset."""
    ds = wds.WebDataset(shard_paths(out, split), shardshuffle=False, empty_check=False)
    return [(x["__key__"], int(x["cls"]) if "cls" in x else -1, hashlib.sha256(x["jpg"]).hexdigest()) for x in ds]


def _same_folder(out: Path, ref: Path) -> None:
    """``out`` holds the samples, keys, labels, counts and skips of the one-process folder ``ref``."""
    a, b = read_manifest(out), read_manifest(ref)
    assert a["identity"] == b["identity"] and a["fingerprint"] == b["fingerprint"]
    for split, sp in a["splits"].items():
        assert _samples(out, split) == _samples(ref, split)
        assert sp["found"] == sp["count"] + sp["skipped"] and sp["per_class"] == b["splits"][split]["per_class"]
        assert sum(s["count"] for s in sp["shards"]) == sp["count"] == b["splits"][split]["count"]
    assert a["skipped"] == b["skipped"]
    assert (out / "skipped.jsonl").read_text() == (ref / "skipped.jsonl").read_text()
    assert not (out / PARTS_DIR).exists() and not (out / ".shard-state").exists()


def test_part_blocks_are_whole_shards_covering_the_plan():
    for length, count, n in [(80, 8, 3), (7, 8, 3), (1000, 7, 4), (0, 5, 2)]:
        blocks = [part_block(length, count, i, n) for i in range(n)]
        assert blocks[0][0] == 0 and blocks[-1][1] == length
        assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:], strict=False))
        assert all(lo % count == 0 for lo, _ in blocks)


def test_three_parts_in_three_processes_merge_to_the_one_process_folder(small_tree, tmp_path, capsys):
    ref = run_shard(_cfg(small_tree, tmp_path / "ref", shard_count=8))
    out = tmp_path / "s"
    procs = [subprocess.Popen([VGG, "shard", str(small_tree), str(out), "--part", f"{k}/3", "--shard-count", "8",
                               "--workers", "1", "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for k in (0, 2)]
    mine = run_shard(_cfg(small_tree, out, shard_count=8, part="1/3"))  # meanwhile, in this process
    assert mine.out == part_dir(out, 1, 3) and mine.found == mine.written + mine.skipped > 0
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()[-2000:]
    assert not (out / "manifest.json").exists() and all((part_dir(out, k, 3) / PART_RECORD).is_file()
                                                        for k in range(3))
    assert run_shard(_cfg(small_tree, out, shard_count=8, part="2/3")).nothing_to_do  # a finished part
    code, err = _vgg(["shard", str(small_tree), str(out), "--merge", "--shard-count", "8", "--workers", "1"], capsys)
    assert code == 0 and "80 samples written, 0 skipped, 80 found" in err
    _same_folder(out, tmp_path / "ref")
    m = read_manifest(out)
    # Parts are whole shards: nothing skipped, no byte limit reached, so the shards are byte for byte the same.
    run_only = {"out": None, "progress": None}  # where it went and how it reported
    assert m["splits"] == ref.manifest["splits"] and {**m["config"], **run_only} == {**ref.manifest["config"],
                                                                                     **run_only}
    assert m["config"]["part"] is None and m["config"]["merge"] is False
    verify = subprocess.run([VGG, "verify", str(out), "--hash", "--workers", "1"],
                            capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0, verify.stderr[-2000:]
    code, err = _vgg(["shard", str(small_tree), str(out), "--merge", "--shard-count", "8"], capsys)
    assert code == 0 and "nothing to do" in err
    assert run_shard(_cfg(small_tree, out, shard_count=8, part="0/3")).nothing_to_do  # merged: parts are done too
    assert not (out / PARTS_DIR).exists()


def test_merge_refuses_missing_and_other_parts_in_one_line(small_tree, tmp_path, capsys):
    out = tmp_path / "s"
    code, err = _vgg(["shard", str(small_tree), str(out), "--merge"], capsys)
    assert code == 2 and "no parts of" in err
    for k in (0, 2):
        run_shard(_cfg(small_tree, out, shard_count=8, part=f"{k}/3"))
    (part_dir(out, 1, 3)).mkdir()  # started elsewhere, not finished
    code, err = _vgg(["shard", str(small_tree), str(out), "--merge", "--shard-count", "8"], capsys)
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("error: cannot merge") and "part(s) 1/3 " in last and "Traceback" not in err
    assert err.count("error:") == 1 and not (out / "manifest.json").exists()
    run_shard(_cfg(small_tree, out, shard_count=8, part="1/3"))
    code, err = _vgg(["shard", str(small_tree), str(out), "--merge", "--shard-count", "9"], capsys)  # other config
    assert code == 2 and "config.shard_count 8 vs 9" in err and not (out / "manifest.json").exists()
    code, err = _vgg(["shard", str(small_tree), str(out), "--part", "3/3"], capsys)
    assert code == 2 and "0 <= i < n" in err
    code, err = _vgg(["shard", str(small_tree), str(out), "--part", "0/3", "--merge"], capsys)
    assert code == 2 and "exclude each other" in err


SCRIPT = """
import sys
from pipeline.shards import ShardConfig, run_shard
run_shard(ShardConfig(source=sys.argv[1], out=sys.argv[2], part="1/2", shard_count=1, workers=1, progress=False))
"""


def test_killed_part_and_killed_merge_rerun_to_the_same_folder(small_tree, tmp_path):
    run_shard(_cfg(small_tree, tmp_path / "ref", shard_count=1))
    out = tmp_path / "s"
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(small_tree), str(out)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    pdir = part_dir(out, 1, 2)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if pdir.is_dir() and len(list(pdir.glob("*.tar"))) >= 3:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.002)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert not (pdir / PART_RECORD).exists() and (pdir / ".shard-state").is_dir()
    res = run_shard(_cfg(small_tree, out, shard_count=1, part="1/2"))
    assert res.resumed and (pdir / PART_RECORD).is_file()
    run_shard(_cfg(small_tree, out, shard_count=1, part="0/2"))
    (part_dir(out, 0, 2) / PART_RECORD).unlink()  # as if killed just before its record: written again
    assert not run_shard(_cfg(small_tree, out, shard_count=1, part="0/2")).nothing_to_do
    # A merge killed after moving some shards: its plan is on disk, a third of the moves done.
    cfg = _cfg(small_tree, out, shard_count=1, merge=True)
    plan = plan_merge(open_shard_job(cfg), 2)
    (out / PARTS_DIR / MERGE_STATE).write_text(json.dumps(plan))
    for src, name, _ in plan["moves"][: len(plan["moves"]) // 3]:
        os.replace(out / PARTS_DIR / src, out / name)
    res = run_shard(cfg)
    assert res.resumed and res.written == 80
    _same_folder(out, tmp_path / "ref")
    assert read_manifest(out)["splits"] == read_manifest(tmp_path / "ref")["splits"]
    assert run_shard(cfg).nothing_to_do


def test_skips_are_reconciled_across_parts(tmp_path):
    build_bad_tree(tmp_path / "bad")
    run_shard(_cfg(tmp_path / "bad", tmp_path / "ref", max_side=64, shard_count=2))
    out = tmp_path / "s"
    for k in range(3):
        run_shard(_cfg(tmp_path / "bad", out, max_side=64, shard_count=2, part=f"{k}/3"))
    res = run_shard(_cfg(tmp_path / "bad", out, max_side=64, shard_count=2, merge=True))
    assert res.skipped > 0 and res.found == res.written + res.skipped
    _same_folder(out, tmp_path / "ref")
