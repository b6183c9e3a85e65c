"""The one rule for finished, reusable outputs (:mod:`pipeline.reuse`), and stages that follow it.

The rule is exercised on real records (JSON files written by :func:`record_finished`), then on
real stage outputs built from the shipped Fashion-MNIST data: a raw-pixel feature store, a shard
folder and its statistics.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import pytest

from pipeline.errors import UserError
from pipeline.reuse import (
    JsonRecord,
    Output,
    Recorded,
    check_reusable,
    config_fields,
    differences,
    identity,
    read_record,
    record_finished,
)


class _Result(JsonRecord):
    """A JSON record with a stage's structural check and clean-up, as a stage's output type writes them."""

    def __init__(self, path: Path, damaged: list[str] | None = None, repairs: bool = False) -> None:
        super().__init__(path, what="a result built from other inputs", hint="use --overwrite")
        self.damaged, self.repairs, self.cleaned = damaged or [], repairs, 0

    def problems(self, finished: bool) -> list[str]:
        return self.damaged if finished else []

    def clean(self) -> None:
        self.cleaned += 1


def _check(path: Path, ident: dict, overwrite: bool = False, **kw):
    return check_reusable(_Result(path, **kw), ident, overwrite)


# ---------------------------------------------------------------- identity and differences
def test_identity_is_canonical_json():
    a = identity(size=32, scales=(32, 64), data=Path("/x/y"), nested={"b": 1, "a": (1, 2)})
    assert a == {"data": "/x/y", "nested": {"a": [1, 2], "b": 1}, "scales": [32, 64], "size": 32}
    assert list(a) == sorted(a) and json.loads(json.dumps(a)) == a
    assert identity(b=1, a=2) == identity(a=2, b=1)


def test_differences_name_fields_nested_and_shorten_digests():
    old = {"inputs": ["a" * 64], "config": {"seed": 0, "size": 32}, "format": "x/1"}
    new = {"inputs": ["b" * 64], "config": {"seed": 0, "size": 48}, "format": "x/1", "extra": True}
    assert differences(old, new) == ["config.size 32 vs 48", "extra None vs True",
                                     f"inputs {'a' * 12} vs {'b' * 12}"]
    assert differences(old, new, labels={"config.size": "image size"})[0] == "image size 32 vs 48"
    assert differences(old, old) == []


def test_config_fields_leave_out_what_never_changes_the_output():
    from pipeline.evaluate import EvaluateConfig

    cfg = EvaluateConfig(checkpoints=["a.pt"], data="d", out="o", progress=False, runtime={"threads": 2})
    fields = config_fields(cfg)
    assert "out" not in fields and "progress" not in fields and "threads" not in fields["runtime"]
    assert fields["checkpoints"] == ["a.pt"] and fields["runtime"]["device"] == cfg.runtime.device
    assert "data" not in config_fields(cfg, "data")


# ---------------------------------------------------------------- the decision on real records
def test_absent_then_finished_same_identity_is_reused(tmp_path):
    out, ident = tmp_path / "result.json", identity(size=32, data="abc")
    assert _check(out, ident) == "build"
    record_finished(out, ident, {"mean": 0.5})
    assert json.loads(out.read_text()) == {"mean": 0.5, "identity": ident}
    assert not [p for p in tmp_path.iterdir() if p != out]  # no temporary file left beside it
    assert _check(out, ident) == "reuse"
    assert JsonRecord(out, "a result").saved(ident) == {"mean": 0.5, "identity": ident}
    assert JsonRecord(out, "a result").saved(None) is None  # no identity (an input is missing): never reused


def test_other_identity_is_a_one_line_error_naming_the_field(tmp_path):
    out = tmp_path / "result.json"
    record_finished(out, identity(size=32, data="abc"), {"mean": 0.5})
    with pytest.raises(UserError) as e:
        _check(out, identity(size=48, data="abc"))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(out))
    assert "built from other inputs (size 32 vs 48)" in msg and msg.endswith("use --overwrite")
    assert "data" not in msg  # only what differs is named
    result = _Result(out)
    assert check_reusable(result, identity(size=48, data="abc"), overwrite=True) == "build" and result.cleaned == 1
    # a result that every run replaces: another identity is not reused, and not refused
    assert JsonRecord(out, "a result").saved(identity(size=48, data="abc")) is None


def test_unfinished_output_is_resumed_or_built(tmp_path):
    out = tmp_path / "store"
    ident = identity(size=32)

    class Unfinished(Output):
        def read(self) -> Recorded:
            return Recorded(ident, False)

    assert check_reusable(Unfinished(out), ident) == "resume"
    # a record not yet written (the output is half-written) is not taken as finished
    out.mkdir()
    (out / "part.bin").write_bytes(b"half")
    assert _check(out / "result.json", ident) == "build"


def test_unreadable_record_is_refused_or_rebuilt(tmp_path):
    out = tmp_path / "result.json"
    out.write_text('{"mean": 0.5, "ident')  # torn
    with pytest.raises(UserError, match=r"not valid JSON.*use --overwrite$"):
        _check(out, identity(size=32))
    assert _check(out, identity(size=32), overwrite=True) == "build"
    out.write_text('{"mean": 0.5}')  # no identity recorded
    with pytest.raises(UserError, match="does not record what made it"):
        _check(out, identity(size=32))
    assert read_record(out).identity is None and read_record(tmp_path / "none.json") is None


def test_structural_check_failure_refuses_resumes_or_rebuilds(tmp_path):
    out = tmp_path / "result.json"
    ident = identity(size=32)
    record_finished(out, ident, {})
    damaged = ["rows 3-5 are missing"]
    with pytest.raises(UserError) as e:
        _check(out, ident, damaged=damaged)
    assert str(e.value) == (f"{out} is marked complete but damaged (rows 3-5 are missing), so it is not reused; "
                            "use --overwrite")
    result = _Result(out, damaged)
    assert check_reusable(result, ident, overwrite=True) == "build" and result.cleaned == 1
    assert _check(out, ident, damaged=damaged, repairs=True) == "resume"  # the stage repairs it
    assert _check(out, ident) == "reuse"


# ---------------------------------------------------------------- stages on the rule
@pytest.fixture(scope="module")
def fm(tmp_path_factory):
    from pipeline.shipped.fashion_mnist import prepare_fashion_mnist

    return prepare_fashion_mnist(tmp_path_factory.mktemp("fm") / "fashion", 3, 2)


def test_pixel_store_is_reused_replaced_for_other_inputs_and_rebuilt_when_damaged(fm, tmp_path):
    from pipeline.features.store import FeatureStore
    from pipeline.transfer.descriptors import write_pixel_store

    out = write_pixel_store(fm, tmp_path / "px.h5", size=8, split="val")
    first = out.stat().st_mtime_ns
    assert write_pixel_store(fm, out, size=8, split="val") == out and out.stat().st_mtime_ns == first  # reused
    write_pixel_store(fm, out, size=6, split="val")  # other inputs: replaced
    with FeatureStore(out) as st:
        assert st.dims == {"net0": 3 * 6 * 6} and st.identity["size"] == 6
    with h5py.File(out, "r+") as f:  # damage the finished store: a dataset goes missing
        del f["descriptors/net0/6"]
    write_pixel_store(fm, out, size=6, split="val")
    with FeatureStore(out) as st:
        assert st.raw(0, 6).shape == (20, 108)


def test_shards_name_the_differing_field_and_refuse_folders_that_do_not_record_their_identity(fm, tmp_path):
    from pipeline.shards import ShardConfig, run_shard

    out = tmp_path / "s"
    cfg = ShardConfig(source=str(fm), out=str(out), workers=1, progress=False)
    first = run_shard(cfg)
    assert first.manifest["identity"]["config"]["max_side"] == 512
    with pytest.raises(UserError) as e:
        run_shard(cfg.model_copy(update={"max_side": 16}))
    assert "another source or config (config.max_side 512 vs 16); pass --overwrite" in str(e.value)
    m = json.loads((out / "manifest.json").read_text())
    del m["identity"]  # a folder that does not say what made it is not taken for this run's
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(UserError, match="does not record what made it"):
        run_shard(cfg)
    assert not run_shard(cfg.model_copy(update={"overwrite": True})).nothing_to_do
    # a finished folder with a shard gone is rewritten (same shards), not reused
    (out / first.manifest["splits"]["train"]["shards"][0]["name"]).unlink()
    again = run_shard(cfg)
    assert not again.nothing_to_do and again.manifest["splits"] == first.manifest["splits"]


def test_stats_are_reused_for_the_same_identity_and_recomputed_otherwise(fm, tmp_path):
    from pipeline.shards import ShardConfig, StatsConfig, run_shard, run_stats

    shards = run_shard(ShardConfig(source=str(fm), out=str(tmp_path / "s"), workers=1, progress=False)).out
    a = run_stats(StatsConfig(shards=str(shards), workers=1, progress=False))
    written = (shards / "manifest.json").stat().st_mtime_ns
    b = run_stats(StatsConfig(shards=str(shards), workers=1, progress=True))  # progress changes nothing
    assert a == b and (shards / "manifest.json").stat().st_mtime_ns == written
    c = run_stats(StatsConfig(shards=str(shards), images=10, seed=1, workers=1, progress=False))
    assert c.images == 10 and c.identity["config"]["images"] == 10
    assert json.loads((shards / "manifest.json").read_text())["stats"]["images"] == 10
