"""Scale out: two gloo ranks under torchrun, and fanned-out parts, merge into the single-process store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.errors import UserError
from pipeline.features import ExtractConfig, FeatureStore, run_extract
from pipeline.features.store import part_path
from tests.helpers.features import SCALES, assert_same_store, threads


@pytest.fixture(scope="module")
def single(tmp_path_factory, ckpt, fmnist) -> Path:
    out = tmp_path_factory.mktemp("single") / "features.h5"
    with threads(1):  # as each torchrun rank (OMP_NUM_THREADS=1: two ranks share two cores)
        run_extract(ExtractConfig(checkpoints=[str(ckpt)], data=str(fmnist), split="val", out=str(out), scales=SCALES,
                                  batch_size=4))
    return out


def test_two_gloo_ranks_under_torchrun_equal_one_process(tmp_path, ckpt, fmnist, single):
    out = tmp_path / "features.h5"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "pipeline", "extract", str(ckpt), "--data", str(fmnist), "--split", "val", "--out", str(out),
           "--scales", ",".join(map(str, SCALES)), "--batch-size", "4", "--device", "cpu", "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread per rank, as the single-process store
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert '"status": "merged"' in proc.stdout and '"world": 2' in proc.stdout
    assert not list(tmp_path.glob("features.h5.part-*")), "parts are removed after the merge"
    assert_same_store(out, single)
    with FeatureStore(out) as st:
        assert st.provenance["merged_from"] == ["features.h5.part-000-of-002", "features.h5.part-001-of-002"]


def test_fanned_out_parts_merge_in_source_order(tmp_path, ckpt, fmnist, single):
    out = tmp_path / "features.h5"
    base = dict(checkpoints=[str(ckpt)], data=str(fmnist), split="val", out=str(out), scales=SCALES, batch_size=4)
    # parts done in reverse order: the merge still follows source order
    for i in (2, 0, 1):
        with threads(1):
            res = run_extract(ExtractConfig(**base, part=f"{i}/3"))
        assert res["status"] == "part" and Path(res["path"]) == part_path(out, i, 3)
    with pytest.raises(UserError, match="part 0 of 3 of a store.*--merge"):
        FeatureStore(part_path(out, 0, 3))
    with FeatureStore(part_path(out, 1, 3), allow_incomplete=True) as st:  # a part reads as its own rows
        assert st.part == (1, 3) and st.n == 12
    res = run_extract(ExtractConfig(out=str(out), merge=True))
    assert res["status"] == "merged" and res["parts"] == 3
    assert_same_store(out, single)
    assert not list(tmp_path.glob("features.h5.part-*"))


def test_merge_refuses_missing_parts(tmp_path, ckpt, fmnist):
    out = tmp_path / "features.h5"
    run_extract(ExtractConfig(checkpoints=[str(ckpt)], data=str(fmnist), split="val", out=str(out), scales=[32],
                              batch_size=4, part="1/2"))
    with pytest.raises(UserError, match="missing part.*part-000-of-002"):
        run_extract(ExtractConfig(out=str(out), merge=True))
    with pytest.raises(UserError, match="fewer than the 9 parts"):
        run_extract(ExtractConfig(checkpoints=[str(ckpt)], data=str(fmnist), split="val", out=str(out), scales=[32],
                                  batch_size=4, part="0/9"))
