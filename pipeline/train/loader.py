"""The training input pipeline on WebDataset shards (paper 3.1 augmentation, 3.3 data parallelism).

Training stream of one rank, composed of webdataset stages::

    endless shard list (same seeded shuffle on every rank, reshuffled each pass)
    -> wds.split_by_node -> wds.split_by_worker -> tar samples
    -> seeded shuffle buffer (seed, epoch, rank, worker)
    -> this worker's share of the epoch, after skipping the batches already trained on
    -> decode + augment (per-sample generator from (seed, epoch, key))
    -> batches of the micro-batch size

An epoch is a fixed number of micro-batches per rank (``steps_per_epoch x accumulation``), taken
from an endless stream, so ranks with fewer or smaller shards never run dry and never hang a
distributed run. The data position is exact: worker ``w`` of ``W`` produces the micro-batches
``w, w+W, ...`` of the epoch, which the DataLoader returns in round-robin order; to resume at
micro-batch ``k`` every worker skips its first ``k // W`` batches as raw bytes (cheap, before
decoding) and the training process drops the next ``k % W``. A resumed run therefore sees the
same samples with the same augmentation as an uninterrupted one (given the same world size and
worker count, which the resume check enforces).

Validation reads each sample exactly once over all ranks (shards split by rank when there are
enough, otherwise samples by index), so distributed top-1/top-5 are exact.

Both streams read the tars with :func:`pipeline.shards.tarstream.tar_samples`, fed the count and
size the manifest records per shard, so a damaged shard stops the run with one line naming it; a
``UserError`` raised in a loader worker is re-raised in the training process with its own one-line
message (not the worker's traceback text). Loader workers ignore SIGINT and any SIGTERM but their
parent's (:func:`pipeline.signals.worker_init`): on Ctrl-C or preemption the training process alone
stops, after its step, and shuts them down quietly.
"""

from __future__ import annotations

import functools
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

__all__ = ["ShardSet", "open_shards", "train_loader", "val_loader", "epoch_micro_batches"]


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

    def paths(self, split: str) -> list[str]:
        """Shard files of ``split`` (each checked to exist)."""
        return shard_paths(self.root, split)

    def items(self, split: str) -> list[dict[str, Any]]:
        """Reader items of ``split``'s shards: ``{"url", "count", "bytes"}`` from the manifest."""
        return shard_items(self.root, split, self.manifest)


def open_shards(root: str, splits: list[str]) -> ShardSet:
    """Open a shard folder and check that ``splits`` exist, are non-empty and their shards are on disk."""
    m = read_manifest(root)
    s = ShardSet(root=str(root), manifest=m)
    for split in splits:
        paths = s.paths(split)  # raises for an unknown split or a missing shard file
        if not paths or s.count(split) == 0:
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


def _collate_train(items: list[tuple]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    xs, ys, offs = zip(*items, strict=False)
    return torch.stack(xs), torch.tensor(ys, dtype=torch.int64), torch.from_numpy(np.stack(offs))


def _loader(pipe: wds.DataPipeline, workers: int, pin: bool) -> DataLoader:
    """The DataLoader of a stream; its workers leave SIGINT/SIGTERM to this process (:mod:`pipeline.signals`)."""
    return DataLoader(pipe, batch_size=None, num_workers=workers, pin_memory=pin,
                      prefetch_factor=4 if workers else None, in_order=True,
                      worker_init_fn=functools.partial(signals.worker_init, os.getpid()) if workers else None)


def _start(loader: DataLoader) -> Iterator:
    """``iter(loader)``: its worker processes start with SIGINT/SIGTERM held back until they ignore them."""
    with signals.blocked():
        return iter(loader)


def _worker_message(e: UserError) -> str:
    """The original one-line message of a UserError that torch re-raised from a loader worker."""
    text = str(e)
    if "\nOriginal Traceback" not in text:
        return text
    last = text.rstrip().splitlines()[-1]
    return last.split(": ", 1)[1] if ": " in last else last


def _checked(it: Iterator) -> Iterator:
    """Batches of a loader iterator; a worker's UserError comes back with its own one-line message."""
    try:
        yield from it
    except UserError as e:
        raise type(e)(_worker_message(e)) from None


class _DropFirst:
    """Iterate a loader after dropping its first ``n`` batches (the sub-round part of a resume skip).

    ``finish`` (if any) maps each kept batch in the training process: the GPU decode of ``data.decode=gpu``.
    """

    def __init__(self, loader: DataLoader, n: int, total: int, finish: Callable[[tuple], tuple] | None = None) -> None:
        self.loader, self.n, self.total, self.finish = loader, n, total, finish

    def __iter__(self) -> Iterator:
        it = _checked(_start(self.loader))
        for _ in range(self.n):
            next(it)
        return it if self.finish is None else map(self.finish, it)

    def __len__(self) -> int:
        return self.total


class _Checked:
    """A loader whose worker errors surface as one line (see :func:`_checked`)."""

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader

    def __iter__(self) -> Iterator:
        return _checked(_start(self.loader))


def train_loader(
    shards: ShardSet, split: str, *, augment: TrainAugment, micro_batch: int, micro_batches: int,
    skip: int, seed: int, epoch: int, shardshuffle: bool, shuffle_buffer: int, workers: int, pin_memory: bool,
) -> _DropFirst:
    """This rank's micro-batches ``skip .. micro_batches-1`` of ``epoch``: (uint8 x, labels, colour offsets).

    Args:
        shards: the shard folder.
        split: training split.
        augment: the per-image augmentation; with ``augment.decode_device`` plain JPEGs are decoded on that
            device in this process (:mod:`pipeline.train.gpu_decode`).
        micro_batch: images per micro-batch on this rank.
        micro_batches: micro-batches per rank in the epoch.
        skip: micro-batches of this epoch already trained on (resume).
        seed, epoch: seed of shard order, shuffle buffer and augmentation.
        shardshuffle, shuffle_buffer: shard and sample shuffling.
        workers: loader worker processes (0 = this process).
        pin_memory: pinned batches (for a GPU).
    Returns:
        An iterable of exactly ``micro_batches - skip`` batches.
    """
    nw = max(1, workers)
    rounds = (skip // nw) * nw
    pipe = wds.DataPipeline(
        functools.partial(_endless_shards, shards.items(split), seed=seed, epoch=epoch, shuffle=shardshuffle),
        wds.split_by_node,
        wds.split_by_worker,
        tar_samples,
        functools.partial(_seeded_shuffle, bufsize=shuffle_buffer, seed=seed, epoch=epoch),
        functools.partial(_epoch_share, per_batch=micro_batch, batches=micro_batches, skip=skip),
        wds.map(functools.partial(_augment, augment=augment, seed=seed, epoch=epoch)),
        wds.batched(micro_batch, collation_fn=collate_raw if augment.decode_device else _collate_train, partial=False),
    )
    dev = augment.decode_device
    finish = functools.partial(finish_on_device, crop=augment.crop.size, device=dev) if dev else None
    return _DropFirst(_loader(pipe, workers, pin_memory), skip - rounds, micro_batches - skip, finish)


# -- validation -----------------------------------------------------------------------------------

def _listed(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    yield from items


def _every_nth(src: Iterator[dict], *, rank: int, world: int) -> Iterator[dict]:
    for i, s in enumerate(src):
        if i % world == rank:
            yield s


def _centre(sample: dict, *, view: CentreCropView) -> tuple[torch.Tensor, int]:
    try:
        return view(sample["jpg"]), _label(sample)
    except ImageError as e:
        raise UserError(f"validation sample {sample['__key__']}: {e}") from None


def _collate_val(items: list[tuple]) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*items, strict=False)
    return torch.stack(xs), torch.tensor(ys, dtype=torch.int64)


def val_loader(shards: ShardSet, split: str, *, view: CentreCropView, batch: int, rank: int, world: int,
               workers: int, pin_memory: bool) -> _Checked:
    """This rank's part of the validation split, each image read by exactly one rank and worker."""
    items = shards.items(split)
    if len(items) >= world:
        mine, sample_split = items[rank::world], None
    else:  # fewer shards than ranks: every rank reads all, keeps samples i % world == rank
        mine, sample_split = items, functools.partial(_every_nth, rank=rank, world=world)
    workers = min(workers, len(mine)) if sample_split is None else 0
    stages: list[Any] = [functools.partial(_listed, mine), wds.split_by_worker, tar_samples]
    if sample_split is not None:
        stages.append(sample_split)
    stages += [wds.map(functools.partial(_centre, view=view)),
               wds.batched(batch, collation_fn=_collate_val, partial=True)]
    return _Checked(_loader(wds.DataPipeline(*stages), workers, pin_memory))
