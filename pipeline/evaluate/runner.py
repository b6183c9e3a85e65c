"""Running the test protocols over a dataset: batching by image size, and many processes.

Paper 3.2 evaluates full, uncropped images at several scales, so images of one batch must share
their rescaled size. Images are put in buckets keyed by (Q, height, width) after rescaling; a
bucket is run when it holds ``batch_size`` images (or when the buffer is full, or at the end), so
images of different sizes never share a forward pass and never change each other's results.

Under ``torchrun`` (several processes), process ``r`` of ``W`` evaluates the images whose position
in the data is ``r mod W``; the per-image results are gathered on process 0 and put back in data
order, so every image is counted exactly once. The process group is :func:`pipeline.runtime.start_distributed`'s
(NCCL on CUDA, gloo on CPU).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from pipeline.errors import UserError
from pipeline.evaluate.protocols import dense_evaluate, multi_crop
from pipeline.models.vgg import VGG
from pipeline.preprocess import Normalization, isotropic_resize, normalize, pil_to_tensor
from pipeline.runtime import DistEnv, autocast, start_distributed, stop_distributed

__all__ = ["EvalNet", "Item", "LocalResults", "evaluate_items", "DistContext", "gather_results"]


@dataclass
class EvalNet:
    """One net to evaluate: the model, its normalisation and test scales."""

    model: VGG
    norm: Normalization
    scales: list[int]


@dataclass
class Item:
    """One image to evaluate (``image`` None when it could not be decoded: ``error`` says why)."""

    index: int
    key: str
    label: int
    image: Image.Image | None
    error: str | None = None


@dataclass
class LocalResults:
    """What one process computed: positions in the data, keys, labels, posteriors, failures."""

    indices: list[int] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    rows: dict[tuple[int, str, int], dict[int, np.ndarray]] = field(default_factory=dict)
    failed: list[dict[str, Any]] = field(default_factory=list)

    def arrays(self, num_classes: dict[int, int]) -> dict[tuple[int, str, int], np.ndarray]:
        """Posteriors per (net, method, Q) as len(indices) x C arrays in local order."""
        out = {}
        for key, by_pos in self.rows.items():
            arr = np.zeros((len(self.indices), num_classes[key[0]]), dtype=np.float32)
            for pos, row in by_pos.items():
                arr[pos] = row
            if len(by_pos) != len(self.indices):
                raise RuntimeError(f"posteriors {key}: {len(by_pos)} of {len(self.indices)} images computed")
            out[key] = arr
        return out


class _Buckets:
    """Rescaled images waiting for a batch, keyed by (Q, height, width)."""

    def __init__(self, nets: list[EvalNet], methods: list[str], results: LocalResults, *, flip: bool, grid: int,
                 batch_size: int, crop_batch: int, max_buffered: int, device: torch.device,
                 channels_last: bool, bf16: bool) -> None:
        self.nets, self.methods, self.results = nets, methods, results
        self.flip, self.grid, self.crop_batch = flip, grid, crop_batch
        self.batch_size, self.max_buffered = batch_size, max_buffered
        self.device, self.channels_last, self.bf16 = device, channels_last, bf16
        self.waiting: dict[tuple[int, int, int], list[tuple[int, torch.Tensor]]] = {}
        self.buffered = 0
        self.scales = sorted({q for n in nets for q in n.scales})

    def add(self, pos: int, image: Image.Image) -> None:
        for q in self.scales:
            t = pil_to_tensor(isotropic_resize(image, q))
            key = (q, int(t.shape[1]), int(t.shape[2]))
            self.waiting.setdefault(key, []).append((pos, t))
            self.buffered += 1
            if len(self.waiting[key]) >= self.batch_size:
                self.run(key)
        while self.buffered > self.max_buffered:  # many distinct sizes: run the fullest buckets
            self.run(max(self.waiting, key=lambda k: len(self.waiting[k])))

    def run(self, key: tuple[int, int, int]) -> None:
        items = self.waiting.pop(key)
        self.buffered -= len(items)
        q = key[0]
        positions = [p for p, _ in items]
        x8 = torch.stack([t for _, t in items]).to(self.device)
        for i, net in enumerate(self.nets):
            if q not in net.scales:
                continue
            x = normalize(x8, net.norm)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(self.device, self.bf16):
                for m in self.methods:
                    if m == "dense":
                        p = dense_evaluate(net.model, x, flip=self.flip)
                    else:
                        p = multi_crop(net.model, x, grid=self.grid, flip=self.flip, crop_batch=self.crop_batch)
                    store = self.results.rows.setdefault((i, m, q), {})
                    for pos, row in zip(positions, p.float().cpu().numpy(), strict=False):
                        store[pos] = row

    def flush(self) -> None:
        for key in sorted(self.waiting):
            self.run(key)


def evaluate_items(items: Iterable[Item], nets: list[EvalNet], methods: list[str], *, flip: bool = True,
                   grid: int = 5, batch_size: int = 16, crop_batch: int = 128, max_buffered: int = 256,
                   device: torch.device | str = "cpu", channels_last: bool = False, bf16: bool = False,
                   on_image: Any = None) -> LocalResults:
    """Evaluate every image of ``items`` with every net, method and scale.

    Args:
        items: images in data order (this process's share).
        nets: the nets, with their normalisation and scales.
        methods: ``dense`` and/or ``multicrop``.
        flip, grid: protocol options (paper: flips on, 5 x 5 grid).
        batch_size: images of one size per forward pass; crop_batch: crops per multi-crop pass.
        max_buffered: most rescaled images held while waiting for a full batch.
        device, channels_last, bf16: where and how to run (bf16 autocast changes results slightly).
        on_image: called with no argument after each image is read (progress).
    Returns:
        The local results; failed images are listed in ``failed`` and have no posteriors.
    """
    device = torch.device(device)
    results = LocalResults()
    buckets = _Buckets(nets, methods, results, flip=flip, grid=grid, batch_size=batch_size, crop_batch=crop_batch,
                       max_buffered=max_buffered, device=device, channels_last=channels_last, bf16=bf16)
    for item in items:
        if item.image is None:
            results.failed.append({"index": item.index, "key": item.key, "reason": item.error or "unreadable"})
        else:
            pos = len(results.indices)
            results.indices.append(item.index)
            results.keys.append(item.key)
            results.labels.append(item.label)
            buckets.add(pos, item.image)
        if on_image is not None:
            on_image()
    buckets.flush()
    return results


@dataclass
class DistContext:
    """This process's rank, the world size and (when started for nets) its :class:`~pipeline.runtime.DistEnv`."""

    rank: int = 0
    world: int = 1
    env: DistEnv | None = None

    @classmethod
    def start(cls, enabled: bool = True, device: str = "auto") -> DistContext:
        """Join torch.distributed when launched by torchrun (WORLD_SIZE > 1) and pick this rank's device."""
        env = start_distributed(device, enabled)
        return cls(env.rank, env.world, env)

    @property
    def device(self) -> torch.device:
        """This process's device (the CPU for a context without nets)."""
        return self.env.device if self.env is not None else torch.device("cpu")

    def mine(self, index: int) -> bool:
        """True if the image at ``index`` belongs to this process."""
        return index % self.world == self.rank

    def broadcast(self, obj: Any) -> Any:
        """Process 0's ``obj`` on every process."""
        if self.world == 1:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        """Leave the process group if :meth:`start` created it."""
        if self.env is not None:
            stop_distributed(self.env)


def gather_results(local: LocalResults, ctx: DistContext, num_classes: dict[int, int]) -> dict[str, Any] | None:
    """Gather every process's results on process 0, in data order; None on the other processes.

    Returns:
        ``{"keys", "labels", "arrays", "failed"}`` with images in data order.
    """
    part = {"indices": local.indices, "keys": local.keys, "labels": local.labels,
            "arrays": local.arrays(num_classes), "failed": local.failed}
    if ctx.world == 1:
        parts = [part]
    else:
        import torch.distributed as dist

        parts = [None] * ctx.world if ctx.rank == 0 else None
        dist.gather_object(part, parts, dst=0)
        if ctx.rank != 0:
            return None
    indices = np.concatenate([np.asarray(p["indices"], dtype=np.int64) for p in parts])
    if len(np.unique(indices)) != len(indices):
        raise RuntimeError("an image was evaluated by two processes")
    order = np.argsort(indices, kind="stable")
    keys = [k for p in parts for k in p["keys"]]
    labels = np.concatenate([np.asarray(p["labels"], dtype=np.int64) for p in parts])
    arrays: dict[tuple[int, str, int], np.ndarray] = {}
    all_keys = sorted({k for p in parts for k in p["arrays"]})
    for k in all_keys:
        chunks = []
        for p in parts:
            if k in p["arrays"]:
                chunks.append(p["arrays"][k])
            elif len(p["indices"]):
                raise RuntimeError(f"posteriors {k} missing on a process")
            else:
                chunks.append(np.zeros((0, num_classes[k[0]]), dtype=np.float32))
        arrays[k] = np.concatenate(chunks)[order]
    failed = sorted((f for p in parts for f in p["failed"]), key=lambda f: f["index"])
    return {"keys": [keys[i] for i in order], "labels": labels[order], "arrays": arrays, "failed": failed}


def check_scales(nets: list[EvalNet]) -> None:
    """Every test scale must be at least the net's crop size (paper: Q >= 224)."""
    for n in nets:
        low = [q for q in n.scales if q < n.model.cfg.crop]
        if low:
            raise UserError(f"test scales {low} are below the crop size {n.model.cfg.crop} of a "
                            f"config {n.model.cfg.config} net; Q must be at least the crop size")
