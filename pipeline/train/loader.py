"""The training input pipeline on WebDataset shards (paper 3.1 augmentation, 3.3 data parallelism): one rank's
endless, seeded, exactly resumable training stream and its share of validation; docs/training.md ("The input
pipeline") gives the stages and the data position."""

from __future__ import annotations

import functools
import itertools
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader

from pipeline import signals
from pipeline.errors import UserError
from pipeline.images import ImageError
from pipeline.shards import read_manifest, shard_paths
from pipeline.shards.reader import shard_items
from pipeline.shards.tarstream import tar_samples
from pipeline.train.gpu_decode import collate_raw, finish_on_device
from pipeline.transforms import CentreCropView, TrainAugment, sample_rng

__all__ = ["ShardSet", "TrainStream", "open_shards", "train_loader", "val_loader", "epoch_micro_batches"]


@dataclass
class ShardSet:
    """A shard folder: its manifest and the paths of each split."""

    root: str
    manifest: dict[str, Any]

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def fingerprint(self) -> str:
        return str(self.manifest.get("fingerprint", ""))

    @property
    def stats(self) -> dict[str, Any] | None:
        return self.manifest.get("stats")

    def count(self, split: str) -> int:
        """Images in ``split``."""
        return int(self.manifest["splits"][split]["count"])

    def items(self, split: str) -> list[dict[str, Any]]:
        """Reader items of ``split``'s shards: ``{"url", "count", "bytes"}`` from the manifest."""
        return shard_items(self.root, split, self.manifest)


def open_shards(root: str, splits: list[str]) -> ShardSet:
    """Open a shard folder and check that ``splits`` exist, are non-empty and their shards are on disk."""
    m = read_manifest(root)
    s = ShardSet(root=str(root), manifest=m)
    for split in splits:
        if not shard_paths(root, split) or s.count(split) == 0:  # shard_paths: an unknown split or a missing file
            raise UserError(f"{root}: split {split!r} has no images")
    return s


def epoch_micro_batches(images_per_epoch: int, global_batch: int, accumulation: int) -> tuple[int, int]:
    """(SGD steps, micro-batches per rank) of one epoch: whole global batches only."""
    steps = images_per_epoch // global_batch
    if steps < 1:
        raise UserError(f"an epoch of {images_per_epoch} images is smaller than the global batch {global_batch}")
    return steps, steps * accumulation


# -- webdataset stages (top-level functions, so loader workers can pickle them) ------------------

def _endless_shards(items: list[dict[str, Any]], *, seed: int, epoch: int, shuffle: bool) -> Iterator[dict[str, Any]]:
    """The shard list repeated forever; each pass shuffled with a seed shared by all ranks."""
    for p in range(1 << 62):
        order = list(items)
        if shuffle:
            random.Random(f"{seed}/{epoch}/{p}").shuffle(order)
        yield from order


def _seeded_shuffle(src: Iterator[dict], *, bufsize: int, seed: int, epoch: int) -> Iterator[dict]:
    """wds.shuffle with a generator seeded by (seed, epoch, rank, worker): reproducible order."""
    if bufsize <= 1:
        yield from src
        return
    rank, _, worker, _ = wds.utils.pytorch_worker_info()
    yield from wds.shuffle(bufsize, initial=bufsize, seed=f"{seed}/{epoch}/{rank}/{worker}")(src)


def _epoch_share(src: Iterator[dict], *, per_batch: int, batches: int, skip: int) -> Iterator[dict]:
    """This worker's samples of the epoch: micro-batches w, w+W, ... from ``W * (skip // W)`` on."""
    _, _, worker, nw = wds.utils.pytorch_worker_info()
    rounds = skip // nw
    mine = len(range(worker + rounds * nw, batches, nw))
    it = iter(src)
    for _ in range(rounds * per_batch):
        next(it)
    for _ in range(mine * per_batch):
        yield next(it)


def _augment(sample: dict, *, augment: TrainAugment, seed: int, epoch: int) -> tuple[Any, int, np.ndarray]:
    key = sample["__key__"]
    try:
        x, off = augment(sample["jpg"], sample_rng(seed, epoch, key))
    except ImageError as e:  # shards hold decodable images; a corrupted one is a data error
        raise UserError(f"training sample {key} ({sample['__url__']}): {e}") from None
    return x, _label(sample), off


def _label(sample: dict) -> int:
    """The sample's class index (a shard without one cannot train a classifier)."""
    cls = sample.get("cls")
    try:
        return int(cls)
    except (TypeError, ValueError):
        what = "has no class label (.cls)" if cls is None else f"has a bad class label {cls[:20]!r}"
        raise UserError(f"sample {sample['__key__']} of {sample['__url__']} {what}; classification needs "
                        "single-label shards") from None


def _collate(items: list[tuple]) -> tuple[torch.Tensor, ...]:
    """(images, labels[, colour offsets]) as one batch."""
    xs, ys, *offs = zip(*items, strict=True)
    return torch.stack(xs), torch.tensor(ys, dtype=torch.int64), *(torch.from_numpy(np.stack(o)) for o in offs)


def _loader(pipe: wds.DataPipeline, workers: int, pin: bool) -> DataLoader:
    """The DataLoader of a stream; its workers leave SIGINT/SIGTERM to this process (:mod:`pipeline.signals`)."""
    return DataLoader(pipe, batch_size=None, num_workers=workers, pin_memory=pin,
                      prefetch_factor=4 if workers else None, in_order=True,
                      worker_init_fn=functools.partial(signals.worker_init, os.getpid()) if workers else None)


def _checked(it: Iterator) -> Iterator:
    """Batches of a loader iterator; a UserError torch re-raised from a worker comes back with its own one line."""
    try:
        yield from it
    except UserError as e:
        text = str(e)
        last = text.rstrip().splitlines()[-1] if "\nOriginal Traceback" in text else None
        raise type(e)(text if last is None else last.split(": ", 1)[-1]) from None


class _Loader:
    """Iterate a loader (worker errors as one line) after dropping its first ``n`` batches (the sub-round part of
    a resume skip); ``finish`` maps each kept batch in this process (``data.decode=gpu``)."""

    def __init__(self, loader: DataLoader, n: int = 0, finish: Callable[[tuple], tuple] | None = None) -> None:
        self.loader, self.n, self.finish = loader, n, finish

    def __iter__(self) -> Iterator:
        with signals.blocked():  # the workers start with SIGINT/SIGTERM held back until they ignore them
            it = _checked(iter(self.loader))
        for _ in range(self.n):
            next(it)
        return it if self.finish is None else map(self.finish, it)


@dataclass
class TrainStream:
    """What a rank's training batches are made of (the same every epoch); validation reads its shards too."""

    shards: ShardSet
    split: str
    augment: TrainAugment  #: per-image augmentation; with ``decode_device``, JPEGs are decoded there
    micro_batch: int  #: images per micro-batch on this rank
    micro_batches: int  #: micro-batches per rank in an epoch
    seed: int = 0  #: seed of shard order, shuffle buffer and augmentation
    shardshuffle: bool = True
    shuffle_buffer: int = 0
    workers: int = 0  #: loader worker processes (0 = this process)
    pin_memory: bool = False  #: pinned batches (for a GPU)


def train_loader(stream: TrainStream, epoch: int, skip: int = 0) -> _Loader:
    """This rank's micro-batches ``skip .. micro_batches-1`` of ``epoch`` (``skip``: already trained on, at a
    resume): exactly ``micro_batches - skip`` batches of (uint8 x, labels, colour offsets)."""
    s = stream
    nw = max(1, s.workers)
    rounds = (skip // nw) * nw
    pipe = wds.DataPipeline(
        functools.partial(_endless_shards, s.shards.items(s.split), seed=s.seed, epoch=epoch, shuffle=s.shardshuffle),
        wds.split_by_node,
        wds.split_by_worker,
        tar_samples,
        functools.partial(_seeded_shuffle, bufsize=s.shuffle_buffer, seed=s.seed, epoch=epoch),
        functools.partial(_epoch_share, per_batch=s.micro_batch, batches=s.micro_batches, skip=skip),
        wds.map(functools.partial(_augment, augment=s.augment, seed=s.seed, epoch=epoch)),
        wds.batched(s.micro_batch, collation_fn=collate_raw if s.augment.decode_device else _collate,
                    partial=False),
    )
    dev = s.augment.decode_device
    finish = functools.partial(finish_on_device, crop=s.augment.crop, device=dev) if dev else None
    return _Loader(_loader(pipe, s.workers, s.pin_memory), skip - rounds, finish)


# -- validation -----------------------------------------------------------------------------------

def _every_nth(src: Iterator[dict], *, rank: int, world: int) -> Iterator[dict]:
    return itertools.islice(src, rank, None, world)


def _centre(sample: dict, *, view: CentreCropView) -> tuple[torch.Tensor, int]:
    try:
        return view(sample["jpg"]), _label(sample)
    except ImageError as e:
        raise UserError(f"validation sample {sample['__key__']}: {e}") from None


def val_loader(stream: TrainStream, split: str, view: CentreCropView, rank: int = 0, world: int = 1) -> _Loader:
    """This rank's part of the validation ``split`` of the stream's shards, in batches of its micro-batch size and
    read by its workers: each image read by exactly one rank and worker."""
    items, workers = stream.shards.items(split), stream.workers
    if len(items) >= world:
        mine, sample_split = items[rank::world], None
    else:  # fewer shards than ranks: every rank reads all, keeps samples i % world == rank
        mine, sample_split = items, functools.partial(_every_nth, rank=rank, world=world)
    workers = min(workers, len(mine)) if sample_split is None else 0
    stages: list[Any] = [functools.partial(iter, mine), wds.split_by_worker, tar_samples]
    if sample_split is not None:
        stages.append(sample_split)
    stages += [wds.map(functools.partial(_centre, view=view)),
               wds.batched(stream.micro_batch, collation_fn=_collate, partial=True)]
    return _Loader(_loader(wds.DataPipeline(*stages), workers, stream.pin_memory))
