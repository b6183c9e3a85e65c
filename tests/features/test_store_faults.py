"""Feature stores under faults: a full disk (a real tmpfs), damaged stores, flipped bits, round trip.

Every failure must end in exit code 2, one ``error: ...`` line and no traceback, and leave nothing
that looks complete.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from pipeline.errors import UserError
from pipeline.features.store import FeatureStore, StoreOutput, StoreWriter
from pipeline.features.verify import verify_file
from tests.helpers.features import assert_same_store, store_arrays
from tests.helpers.stores import (
    SCALES,
    assert_one_line_error,
    fill_disk,
    flip_bit_in_chunk,
    image_folder,
    make_checkpoint,
    run_main,
    run_subprocess,
    tmpfs,
)


@pytest.fixture(scope="module")
def net(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("net") / "net.pt")


@pytest.fixture(scope="module")
def images(tmp_path_factory, photos) -> Path:
    return image_folder(tmp_path_factory.mktemp("img") / "photos", photos, n=8)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, net, images) -> Path:
    """The store of ``images`` extracted on an ordinary disk."""
    from pipeline.features import ExtractConfig, run_extract

    out = tmp_path_factory.mktemp("ref") / "features.h5"
    run_extract(ExtractConfig(checkpoints=[str(net)], data=str(images), out=str(out), scales=[32, 48], batch_size=4))
    return out


def _extract_args(net: Path, images: Path, out: Path) -> list:
    return ["extract", net, "--data", images, "--out", out, "--scales", SCALES, "--batch-size", "4", "--quiet"]


def test_verified_store_round_trips_unchanged(reference, tmp_path):
    """A store that passed its read-back reads back exactly what was written, and verifies whole."""
    assert verify_file(reference) == []
    with FeatureStore(reference) as st:
        raw = {q: st.raw(0, q) for q in st.scales}
        ids = list(st.ids)
    with h5py.File(reference, "r") as f:
        for q, x in raw.items():
            ds = f[f"descriptors/net0/{q}"]
            assert ds.fletcher32  # every descriptor chunk carries its checksum
            np.testing.assert_array_equal(ds[:][f["done"][:]], x)
        assert list(f["ids"].asstr()[:]) == ids
    # a copy written again through the writer is identical, dataset for dataset
    copy = tmp_path / "copy.h5"
    copy.write_bytes(reference.read_bytes())
    with h5py.File(copy, "r+") as f:
        f.attrs.modify("complete", False)
    w = StoreWriter(copy)
    descs = [np.stack([raw[q] for q in sorted(raw)], axis=1)]
    w.write_batch(0, descs, np.ones(len(ids), dtype=bool))
    w.finalize()
    assert_same_store(reference, copy)


def test_full_disk_fails_cleanly_and_rerun_with_space_is_complete(net, images, reference, tmp_path, capfd):
    """`vgg extract` onto a full tmpfs: one-line ENOSPC error, no store; with space again: the same store."""
    with tmpfs(tmp_path / "small", "1m") as disk:
        filler = fill_disk(disk, leave=8 << 10)
        out = disk / "features.h5"
        code, text = run_subprocess(_extract_args(net, images, out))
        assert_one_line_error(code, text, "No space left on device", str(out))
        assert not out.exists()  # nothing half-written is visible
        # no temp file left behind (the empty lock file of the store stays: it guards the next run)
        assert [p.name for p in disk.iterdir() if p.name != ".features.h5.lock"] == [filler.name]
        filler.unlink()
        code, text = run_main(_extract_args(net, images, out), capfd)
        assert code == 0, text
        assert_same_store(reference, out)
        assert StoreOutput(out).read().finished is True


def test_full_disk_while_finishing_leaves_store_incomplete(reference, tmp_path):
    """The disk fills after creation: finishing fails with the OS error, the store stays incomplete
    and is refused by readers; with space again the same writer call completes it."""
    with FeatureStore(reference) as st:
        descs = [np.stack([st.raw(0, q) for q in st.scales], axis=1)]
    with tmpfs(tmp_path / "small", "1m") as disk:
        store = disk / "features.h5"
        store.write_bytes(reference.read_bytes())
        with h5py.File(store, "r+") as f:  # an unfinished store: nothing done, no failures recorded
            f["done"][:] = False
            del f["failed"]
            f.attrs.modify("complete", False)
        filler = fill_disk(disk)
        w = StoreWriter(store)
        n = len(descs[0])
        ok = np.ones(n, dtype=bool)
        ok[-1] = False  # one undecodable image: its failure must be logged and recorded
        with pytest.raises(UserError, match="No space left on device") as e:
            w.write_batch(0, descs, ok, [(n - 1, "broken", "cannot decode")])
            w.finalize()
        assert "\n" not in str(e.value) and "incomplete" in str(e.value)
        w.close()
        assert StoreOutput(store).read().finished is False
        with pytest.raises(UserError, match="incomplete feature store"):
            FeatureStore(store)
        filler.unlink()
        w = StoreWriter(store)
        w.write_batch(0, descs, ok, [(n - 1, "broken", "cannot decode")])
        w.finalize()
        with FeatureStore(store) as st:
            assert st.n == n - 1 and [f["id"] for f in st.failed] == ["broken"]
            np.testing.assert_array_equal(st.raw(0, st.scales[0]), descs[0][:-1, 0])


def test_store_with_a_deleted_dataset_is_damaged_not_complete(net, images, reference, tmp_path, capfd):
    out = tmp_path / "features.h5"
    out.write_bytes(reference.read_bytes())
    with h5py.File(out, "r+") as f:
        del f["descriptors/net0/48"]
    code, text = run_main(_extract_args(net, images, out), capfd)
    assert_one_line_error(code, text, "damaged", "descriptors/net0/48 is missing", "--overwrite")
    code, text = run_main(["inspect", out], capfd)
    assert_one_line_error(code, text, "descriptors/net0/48 is missing")
    code, text = run_main([*_extract_args(net, images, out), "--overwrite"], capfd)
    assert code == 0, text
    assert_same_store(reference, out)


def test_store_without_checksums_is_damaged_not_reused(net, images, reference, tmp_path, capfd):
    """Descriptors without fletcher32 checksums (where a lost write, done rows of zeros, would go unseen) are
    refused as damaged: every store this pipeline writes checksums every chunk."""
    out = tmp_path / "features.h5"
    arrays = store_arrays(reference)
    with h5py.File(reference, "r") as src, h5py.File(out, "w") as f:
        for k, v in src.attrs.items():
            f.attrs[k] = v
        for name, data in arrays.items():
            if name.startswith("descriptors/"):
                data = data.copy()
                data[2:5] = 0  # lost writes
            f.create_dataset(name, data=data.astype(object) if data.dtype.kind in "OU" else data,
                             dtype=h5py.string_dtype() if data.dtype.kind in "OU" else None)
    assert "descriptors/net0/32 has no fletcher32 checksum" in verify_file(out)[0]
    code, text = run_main(_extract_args(net, images, out), capfd)
    assert_one_line_error(code, text, "marked complete but damaged", "has no fletcher32 checksum")


def test_flipped_bit_is_caught_by_the_checksum(net, images, reference, tmp_path, capfd):
    out = tmp_path / "features.h5"
    out.write_bytes(reference.read_bytes())
    flip_bit_in_chunk(out, "descriptors/net0/32")
    with (
        FeatureStore(out) as st,
        pytest.raises(UserError, match="descriptors/net0/32 cannot be read: checksum mismatch"),
    ):
        st.features()  # the structure is whole; the data is not
    code, text = run_main(_extract_args(net, images, out), capfd)
    assert_one_line_error(code, text, "checksum mismatch", "not reused")
    code, text = run_main(["transfer", out, "--protocol", "generic", "--out", tmp_path / "t"], capfd)
    assert_one_line_error(code, text, "checksum mismatch")
    assert not (tmp_path / "t" / "transfer.json").exists()


def test_resuming_a_damaged_unfinished_store_is_refused(net, images, reference, tmp_path, capfd):
    out = tmp_path / "features.h5"
    out.write_bytes(reference.read_bytes())
    with h5py.File(out, "r+") as f:
        f.attrs.modify("complete", False)
        del f["done"]
    code, text = run_main(_extract_args(net, images, out), capfd)
    assert_one_line_error(code, text, "unfinished but damaged", "dataset done is missing")


def test_a_second_extract_into_a_store_being_written_is_refused(net, images, tmp_path, capfd):
    """Two runs writing one store: the second stops with one line while the first holds the store's lock."""
    from pipeline.locks import exclusive

    out = tmp_path / "features.h5"
    with exclusive(tmp_path / ".features.h5.lock", "the first run"):
        code, text = run_main(_extract_args(net, images, out), capfd)
    assert_one_line_error(code, text, "being written by another run", str(out))
    assert not out.exists()
