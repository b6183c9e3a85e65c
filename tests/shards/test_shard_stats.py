"""``run_stats`` checked against numpy on the same pixels (read back with webdataset)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from pipeline.errors import UserError
from pipeline.shards import ShardConfig, StatsConfig, read_manifest, run_shard, run_stats, shard_paths
from tests.helpers.layouts import jpeg_bytes, photo


@pytest.fixture(scope="module")
def photo_shards(tmp_path_factory):
    """Shards of 24 real colour photos in 3 classes, 5 per shard."""
    root = tmp_path_factory.mktemp("photos")
    for i in range(24):
        d = root / "train" / f"c{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{i}.jpg").write_bytes(jpeg_bytes(photo(i, (96 + 8 * (i % 4), 72))))
    out = root.parent / "photo_shards"
    run_shard(ShardConfig(source=str(root), out=str(out), shard_count=5, workers=1, progress=False))
    return out


def _pixels(out, split="train"):
    ds = wds.WebDataset(shard_paths(out, split), shardshuffle=False, empty_check=False)
    return [np.asarray(Image.open(io.BytesIO(x["jpg"])).convert("RGB")).reshape(-1, 3) for x in ds]


def test_stats_match_numpy_on_all_pixels(photo_shards):
    st = run_stats(StatsConfig(shards=str(photo_shards), workers=2, progress=False))
    px = np.concatenate(_pixels(photo_shards)).astype(np.float64)
    assert st["images"] == 24 and st["pixels"] == len(px)
    np.testing.assert_allclose(st["mean"], px.mean(axis=0), rtol=1e-12)
    cov = np.cov(px.T, bias=True)
    np.testing.assert_allclose(st["cov"], cov, rtol=1e-9, atol=1e-9)
    val, vec = np.array(st["eigval"]), np.array(st["eigvec"])
    assert np.all(np.diff(val) <= 0) and np.all(val > 0)
    np.testing.assert_allclose(cov @ vec, vec * val, atol=1e-6)  # columns are eigenvectors
    np.testing.assert_allclose(vec.T @ vec, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(np.sort(val), np.linalg.eigvalsh(cov), rtol=1e-10)
    assert read_manifest(photo_shards)["stats"]["mean"] == st["mean"]  # stored for the training stage


def test_seeded_subsample_is_reproducible_and_matches_numpy(photo_shards):
    a = run_stats(StatsConfig(shards=str(photo_shards), images=7, seed=3, workers=1, progress=False))
    b = run_stats(StatsConfig(shards=str(photo_shards), images=7, seed=3, workers=2, progress=False))
    c = run_stats(StatsConfig(shards=str(photo_shards), images=7, seed=4, workers=1, progress=False))
    assert a == b and a["images"] == 7 and a["sampled"] and a["mean"] != c["mean"]
    chosen = np.sort(np.random.default_rng(3).choice(24, size=7, replace=False))
    px = np.concatenate([p for i, p in enumerate(_pixels(photo_shards)) if i in set(chosen)]).astype(np.float64)
    np.testing.assert_allclose(a["mean"], px.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(a["cov"], np.cov(px.T, bias=True), rtol=1e-9)


def test_stats_errors(photo_shards, tmp_path):
    with pytest.raises(UserError, match="no split 'val'"):
        run_stats(StatsConfig(shards=str(photo_shards), split="val", progress=False))
    with pytest.raises(UserError, match="no manifest.json"):
        run_stats(StatsConfig(shards=str(tmp_path), progress=False))
