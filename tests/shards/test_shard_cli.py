"""``vgg shard``, ``vgg stats``, ``vgg inspect`` through the real console entry point."""

from __future__ import annotations

import json

import pytest

from pipeline.cli import main
from tests.helpers.layouts import build_voc


def _vgg(argv, capsys):
    code = 0
    try:
        main(argv)
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def test_shard_stats_inspect(fm_tree, tmp_path, capsys):
    out = tmp_path / "s"
    code, o, e = _vgg(["shard", str(fm_tree), str(out), "--shard-count", "100", "--workers", "1"], capsys)
    assert code == 0 and "imagefolder (detected)" in e  # progress on stderr
    assert "250 samples written, 0 skipped, 250 found" in o and o.count("250 samples") == 1  # the summary, once
    code, o, e = _vgg(["shard", str(fm_tree), str(out), "--shard-count", "100"], capsys)
    assert code == 0 and "nothing to do" in o
    code, o, e = _vgg(["shard", str(fm_tree), str(out), "--max-side", "20"], capsys)
    last = e.strip().splitlines()[-1]
    assert code == 2 and last.startswith("error: ") and "--overwrite" in last and "Traceback" not in e
    code, o, e = _vgg(["stats", str(out), "--images", "50", "--workers", "1", "--json"], capsys)
    assert code == 0 and json.loads(o)["images"] == 50 and len(json.loads(o)["eigvec"]) == 3
    code, o, e = _vgg(["stats", str(out), "--images", "50", "--workers", "1"], capsys)  # reused, printed for people
    assert code == 0 and "over 50 images" in o and "mean RGB: [" in o and o.count("\n    ") == 3
    code, o, e = _vgg(["inspect", str(out), "--samples", "2"], capsys)
    assert code == 0 and "split train: 200 samples, 2 shards" in o and "stats (train, 50 images)" in o
    assert o.count("cls ") == 2


def test_shard_format_option_and_bad_source(tmp_path, capsys):
    build_voc(tmp_path)
    code, o, e = _vgg(["shard", str(tmp_path / "VOCdevkit"), str(tmp_path / "s"), "--format", "voc",
                       "--split", "test", "--workers", "1"], capsys)
    assert code == 0 and "test: 2 samples" in o
    code, o, e = _vgg(["shard", str(tmp_path / "missing"), str(tmp_path / "t")], capsys)
    assert code == 2 and "source not found" in e
    code, o, e = _vgg(["inspect", str(tmp_path / "VOCdevkit")], capsys)
    assert code == 2 and "no manifest.json" in e


@pytest.mark.parametrize("suffix", [".pt"])
def test_inspect_checkpoint(tmp_path, capsys, suffix):
    from pipeline.models import ModelConfig, build_model, save_checkpoint

    model = build_model(ModelConfig(config="A", num_classes=10, width=0.125, fc_width=32, crop=32))
    save_checkpoint(tmp_path / f"m{suffix}", model, meta={"classes": list("abcdefghij")})
    code, o, e = _vgg(["inspect", str(tmp_path / f"m{suffix}")], capsys)
    assert code == 0
    d = json.loads(o)
    assert d["model"]["config"] == "A" and d["meta"]["classes"][0] == "a"
