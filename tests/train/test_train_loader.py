"""The webdataset training stream on real Fashion-MNIST shards: epoch size, data position, splits."""

from __future__ import annotations

import collections

import pytest
import torch

from pipeline.errors import UserError
from pipeline.preprocess import TrainScale
from pipeline.train.loader import TrainStream, epoch_micro_batches, open_shards, train_loader, val_loader
from pipeline.transforms import CentreCropView, TrainAugment
from tests.helpers.train import chunks, fmnist_samples, write_shards


@pytest.fixture(scope="module")
def uneven(tmp_path_factory):
    """Three uneven training shards (90, 30, 20 images) and three validation shards (23, 10, 4)."""
    tr = fmnist_samples("train", 14)
    va = fmnist_samples("t10k", 4)[:37]
    return open_shards(
        write_shards(
            tmp_path_factory.mktemp("uneven"), {"train": chunks(tr, [90, 30, 20]), "val": chunks(va, [23, 10, 4])}
        ),
        ["train", "val"],
    )


AUG = TrainAugment(scale=TrainScale(s_min=32, s_max=40), crop=32)


def _batches(shards, *, skip=0, workers=0, epoch=0, micro_batches=12, micro=8, buffer=50, shuffle=True):
    return list(train_loader(TrainStream(shards, "train", AUG, micro, micro_batches, seed=7, shardshuffle=shuffle,
                                         shuffle_buffer=buffer, workers=workers), epoch, skip))


@pytest.mark.parametrize("world", [1, 2, 3])
def test_every_rank_gets_the_same_number_of_batches(uneven, monkeypatch, world):
    # 140 images, 3 uneven shards: each rank of `world` still yields exactly the epoch's micro-batches
    for rank in range(world):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", str(world))
        got = _batches(uneven, micro_batches=9, micro=8)
        assert len(got) == 9
        assert all(x.shape == (8, 3, 32, 32) and x.dtype == torch.uint8 and y.shape == (8,) and o.shape == (8, 3)
                   for x, y, o in got)


def test_ranks_read_different_shards(uneven, monkeypatch):
    labels = {}
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        labels[rank] = torch.cat([b[0] for b in _batches(uneven, micro_batches=4, shuffle=False, buffer=0)])
    assert not torch.equal(labels[0], labels[1])


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_position_gives_the_rest_of_the_epoch_exactly(uneven, workers):
    full = _batches(uneven, workers=workers)
    assert len(full) == 12
    for skip in (1, 5):
        tail = _batches(uneven, workers=workers, skip=skip)
        assert len(tail) == 12 - skip
        for (a, ya, oa), (b, yb, ob) in zip(full[skip:], tail, strict=False):
            assert torch.equal(a, b) and torch.equal(ya, yb) and torch.equal(oa, ob)


def test_epochs_differ_and_repeat_exactly(uneven):
    e0, e0b, e1 = _batches(uneven, epoch=0), _batches(uneven, epoch=0), _batches(uneven, epoch=1)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(e0, e0b, strict=False))
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(e0, e1, strict=False))


def test_an_epoch_covers_the_data(uneven):
    # 140 images, epoch of 17 batches of 8 = 136: each class (14 images) nearly fully present
    ys = torch.cat([b[1] for b in _batches(uneven, micro_batches=17)])
    counts = collections.Counter(ys.tolist())
    assert sum(counts.values()) == 136 and set(counts) == set(range(10))


@pytest.mark.parametrize("world", [1, 2, 4])
def test_validation_reads_every_image_once_over_ranks(uneven, world):
    view = CentreCropView(q=36, crop=32)
    ys = []
    for rank in range(world):
        for workers in (0, 2):
            stream = TrainStream(uneven, "train", AUG, 8, 1, workers=workers)
            got = torch.cat([y for _, y in val_loader(stream, "val", view, rank, world)])
            if workers == 0:
                ys.append(got)
            else:
                assert collections.Counter(got.tolist()) == collections.Counter(ys[-1].tolist())
    ys = torch.cat(ys)
    want = [y for shard in ([s[2] for s in fmnist_samples("t10k", 4)[:37]],) for y in shard]
    assert len(ys) == 37 and collections.Counter(ys.tolist()) == collections.Counter(want)


def test_bad_shard_folders(tmp_path, uneven):
    with pytest.raises(UserError, match="manifest"):
        open_shards(str(tmp_path), ["train"])
    with pytest.raises(UserError, match="no split"):
        open_shards(uneven.root, ["test"])
    with pytest.raises(UserError, match="smaller than the global batch"):
        epoch_micro_batches(100, 256, 1)
    assert epoch_micro_batches(1000, 256, 4) == (3, 12)


def test_damaged_shard_in_a_loader_worker_is_one_line(uneven, tmp_path):
    import shutil

    from pipeline.shards.tarstream import ShardError

    d = tmp_path / "s"
    shutil.copytree(uneven.root, d)
    with open(d / "val-000000.tar", "r+b") as fh:
        fh.truncate(2048)
    shards = open_shards(str(d), ["train", "val"])
    view = CentreCropView(q=36, crop=32)
    with pytest.raises(ShardError) as e:
        list(val_loader(TrainStream(shards, "train", AUG, 8, 1, workers=2), "val", view))
    msg = str(e.value)
    assert "\n" not in msg and "Traceback" not in msg and "val-000000.tar" in msg and "the manifest says" in msg
