"""The feature store: schema, aggregation over scales, late fusion, L2 placement, float16, failures."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from pipeline.errors import UserError
from pipeline.features import ExtractConfig, FeatureStore, run_extract, summarise_store
from pipeline.features.store import FORMAT
from tests.helpers.features import SCALES


def _l2(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def fused(tmp_path_factory, ckpt, ckpt2, fmnist):
    """Two nets (late fusion) on Fashion-MNIST val, float32."""
    out = tmp_path_factory.mktemp("fused") / "features.h5"
    res = run_extract(ExtractConfig(checkpoints=[str(ckpt), str(ckpt2)], data=str(fmnist), split="val",
                                    out=str(out), scales=SCALES, batch_size=8))
    assert res["status"] == "written" and res["dims"] == [64, 48]
    return out


def test_schema_readable_with_plain_h5py(fused, ckpt, fmnist):
    with h5py.File(fused, "r") as f:
        assert f.attrs["format"] == FORMAT and bool(f.attrs["complete"]) and f.attrs["label_kind"] == "single"
        prov = json.loads(f.attrs["provenance"])
        ids = f["ids"].asstr()[:]
        assert len(ids) == 30 and f["labels"].dtype == np.int64 and f["done"][:].all()
        assert f["descriptors/net0/48"].shape == (30, 64) and f["descriptors/net1/48"].shape == (30, 48)
        assert f["descriptors/net0/48"].chunks is not None
        assert list(f["classes"].asstr()[:]) == sorted(p.name for p in (fmnist / "val").iterdir())
        assert len(f["failed/ids"]) == 0
    from pipeline.io import sha256_file

    assert prov["checkpoints"][0]["sha256"] == sha256_file(ckpt)
    assert prov["scales"] == SCALES and prov["flip"] is True and prov["pipeline_version"]
    assert prov["data"]["fingerprint"] and prov["config"]["batch_size"] == 8
    # ids in source order (ImageFolder: sorted class folders, sorted files) and labels = class index
    with FeatureStore(fused) as st:
        classes = st.classes
        expect = [(f"{c}__{p.stem}", i) for i, c in enumerate(classes) for p in sorted((fmnist / "val" / c).iterdir())]
        assert list(st.ids) == [k for k, _ in expect]
        assert st.labels.tolist() == [i for _, i in expect]


def test_aggregation_fusion_and_l2_placement(fused):
    with FeatureStore(fused) as st:
        assert st.nets == ["net0", "net1"] and st.scales == SCALES
        raw = {(n, q): st.raw(n, q) for n in (0, 1) for q in SCALES}
        avg = [np.mean([raw[n, q] for q in SCALES], axis=0) for n in (0, 1)]
        stack = [np.hstack([raw[n, q] for q in SCALES]) for n in (0, 1)]
        # paper default: average (or stack) over scales, stack the nets, L2-normalise the result
        np.testing.assert_allclose(st.features(), _l2(np.hstack(avg)), rtol=1e-6)
        np.testing.assert_allclose(st.features(aggregate="stack"), _l2(np.hstack(stack)), rtol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(st.features(aggregate="stack"), axis=1), 1, rtol=1e-6)
        np.testing.assert_allclose(st.features(l2=False), np.hstack(avg), rtol=1e-6)
        np.testing.assert_allclose(st.features(l2="net"), np.hstack([_l2(a) for a in avg]), rtol=1e-6)
        per_scale = [np.mean([_l2(raw[n, q]) for q in SCALES], axis=0) for n in (0, 1)]
        np.testing.assert_allclose(st.features(l2="scale"), np.hstack(per_scale), rtol=1e-6)
        np.testing.assert_allclose(st.features(l2="both"), _l2(np.hstack(per_scale)), rtol=1e-6)
        # subsets of nets and scales
        np.testing.assert_allclose(st.features(nets=[1], scales=[64]), _l2(raw[1, 64]), rtol=1e-6)
        np.testing.assert_allclose(st.features(nets=["net0"], aggregate="stack", scales=[32, 64]),
                                   _l2(np.hstack([raw[0, 32], raw[0, 64]])), rtol=1e-6)
        assert st.features().dtype == np.float32
        with pytest.raises(UserError, match="no scale"):
            st.features(scales=[256])
        with pytest.raises(UserError, match="no net"):
            st.features(nets=[2])
        with pytest.raises(UserError, match="l2 must be"):
            st.features(l2="sometimes")
        with pytest.raises(UserError, match="no region descriptors"):
            st.features(regions=True)


def test_fused_store_net1_equals_single_net_store(tmp_path, fused, ckpt2, fmnist):
    single = tmp_path / "b.h5"
    run_extract(ExtractConfig(checkpoints=[str(ckpt2)], data=str(fmnist), split="val", out=str(single),
                              scales=SCALES, batch_size=8))
    with FeatureStore(fused) as a, FeatureStore(single) as b:
        for q in SCALES:
            np.testing.assert_array_equal(a.raw(1, q), b.raw(0, q))


def test_float16_storage(tmp_path, fused, ckpt, ckpt2, fmnist):
    out = tmp_path / "f16.h5"
    run_extract(ExtractConfig(checkpoints=[str(ckpt), str(ckpt2)], data=str(fmnist), split="val", out=str(out),
                              scales=SCALES, batch_size=8, dtype="float16"))
    with h5py.File(out, "r") as f:
        assert f["descriptors/net0/32"].dtype == np.float16
    with FeatureStore(out) as half, FeatureStore(fused) as full:
        assert half.raw(0, 32).dtype == np.float32
        np.testing.assert_allclose(
            half.raw(0, 48), full.raw(0, 48), rtol=2e-3, atol=1e-3 * np.abs(full.raw(0, 48)).max()
        )
        np.testing.assert_allclose(half.features(aggregate="stack"), full.features(aggregate="stack"), atol=2e-3)
    assert out.stat().st_size < 0.75 * fused.stat().st_size


def test_decode_failures_recorded_and_rows_consistent(tmp_path, ckpt, photos_tree):
    out = tmp_path / "p.h5"
    res = run_extract(ExtractConfig(checkpoints=[str(ckpt)], data=str(photos_tree), out=str(out), scales=[32, 64],
                                    batch_size=3))
    assert res["failed"] == 2 and res["images"] == 6
    with FeatureStore(out) as st:
        assert sorted(f["id"] for f in st.failed) == ["china__notes", "flower__broken"]
        assert all(f["reason"] for f in st.failed)
        assert "not an image" in {f["id"]: f["reason"] for f in st.failed}["china__notes"]
        assert st.n == 4 and st.rows_total == 6
        assert list(st.ids) == ["china__china", "china__china_portrait", "flower__flower", "flower__flower_portrait"]
        assert st.labels.tolist() == [0, 0, 1, 1]
        assert st.features().shape == (4, 64) and np.isfinite(st.features()).all()
    with h5py.File(out, "r") as f:
        assert f["done"][:].tolist() == [True, True, False, False, True, True]
        assert f["failed/rows"][:].tolist() == [2, 3]
    text = summarise_store(out)
    assert "complete" in text and "2 failed" in text and "net0" in text and "[32, 64]" in text


def test_incomplete_store_refused_unless_asked(tmp_path, fused):
    import shutil

    part = tmp_path / "partial.h5"
    shutil.copy(fused, part)
    with h5py.File(part, "r+") as f:
        f.attrs.modify("complete", False)
        done = f["done"][:]
        done[10:] = False
        f["done"][:] = done
    with pytest.raises(UserError, match="incomplete feature store"):
        FeatureStore(part)
    with FeatureStore(part, allow_incomplete=True) as st:
        assert st.n == 10 and len(st.ids) == 10 and st.features().shape[0] == 10 and len(st.labels) == 10
    assert "INCOMPLETE (10/30" in summarise_store(part)


def test_not_a_store(tmp_path):
    bad = tmp_path / "x.h5"
    bad.write_text("hello")
    with pytest.raises(UserError, match="not a readable HDF5"):
        FeatureStore(bad)
    with pytest.raises(UserError, match="not found"):
        FeatureStore(tmp_path / "missing.h5")
