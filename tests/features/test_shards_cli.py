"""Extraction from WebDataset shards, and the ``vgg extract`` command line."""

from __future__ import annotations

import json

import numpy as np

from pipeline.cli import main
from pipeline.features import FeatureStore, image_descriptor
from pipeline.images import decode_rgb
from pipeline.models import load_model
from pipeline.preprocess import Normalization
from tests.helpers.features import NORM, SCALES


def vgg(*args: str) -> int:
    """Run the ``vgg`` command line in this process; its exit status."""
    try:
        main(list(args))
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def test_extract_from_shards(tmp_path, ckpt, fmnist):
    from pipeline.shards import ShardConfig, iter_samples, run_shard

    shards = tmp_path / "shards"
    run_shard(ShardConfig(source=str(fmnist), out=str(shards), splits=["val"], shard_count=8, workers=1,
                          progress=False))
    out = tmp_path / "f.h5"
    assert vgg("extract", str(ckpt), "--data", str(shards), "--split", "val", "--out", str(out),
               "--scales", "32,48,64", "--batch-size", "8", "--quiet") == 0
    samples = list(iter_samples(shards, "val"))  # shard order (shuffled at sharding time)
    model, _ = load_model(ckpt)
    with FeatureStore(out) as st:
        assert list(st.ids) == [s["__key__"] for s in samples]
        assert st.labels.tolist() == [s["cls"] for s in samples]
        assert st.provenance["data"]["kind"] == "shards"
        for row in (0, 13, 29):
            ref = image_descriptor(model, decode_rgb(samples[row]["jpg"]), SCALES, Normalization(**NORM))
            for si, q in enumerate(SCALES):
                np.testing.assert_allclose(st.raw(0, q)[row], ref[si], rtol=1e-4, atol=1e-6)


def test_cli_json_noop_and_one_line_errors(tmp_path, ckpt, fmnist, capsys):
    out = tmp_path / "f.h5"
    args = ["extract", str(ckpt), "--data", str(fmnist), "--split", "val", "--out", str(out), "--scales", "paper",
            "--relative", "--aggregate", "stack", "--dtype", "float16", "--quiet"]
    assert vgg(*args, "--json") == 0
    res = json.loads(capsys.readouterr().out)
    assert res["status"] == "written" and res["scales"] == [32, 48, 64] and res["images"] == 30
    with FeatureStore(out) as st:
        assert st.dtype == "float16" and st.default_aggregate == "stack" and st.features().shape == (30, 3 * 64)
    assert vgg(*args) == 0
    assert "already holds these features" in capsys.readouterr().out
    for bad, msg in ((["--scales", "16"], "below the crop size"), (["--scales", "3x"], "--scales: expected integers"),
                     (["--dtype", "int8"], "dtype"), (["--scales", "voc"], "other inputs")):
        assert vgg(*args, *bad) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error: ") and msg in err[-1]
    assert vgg("extract", "--data", str(fmnist), "--out", str(out)) == 2
    assert "one or two checkpoints" in capsys.readouterr().err
