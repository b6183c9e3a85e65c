"""Running the test protocols (paper 3.2) over a dataset: the nets and their test scales, batches of images of one
rescaled size (so no image changes another's result), and torchrun processes (process ``r`` of ``W`` evaluates
the images at positions ``r mod W``; process 0 gathers them in data order)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from pipeline.data import Sample
from pipeline.errors import UserError
from pipeline.evaluate.protocols import dense_evaluate, multi_crop
from pipeline.io import sha256_file
from pipeline.models.vgg import VGG
from pipeline.preprocess import (
    Normalization,
    isotropic_resize,
    normalization_of,
    normalize,
    pil_to_tensor,
    train_scale_of,
)
from pipeline.runtime import DistEnv, autocast

__all__ = ["EvalNet", "EvalSettings", "LocalResults", "checkpoint_test_scales", "load_nets",
           "check_classes", "evaluate_items", "gather_results", "broadcast"]


@dataclass
class EvalNet:
    """One net to evaluate: the model, its normalisation and test scales."""

    model: VGG
    norm: Normalization
    scales: list[int]


@dataclass
class EvalSettings:
    """How the protocols run: methods, flips, crop grid, batching, and where."""

    methods: list[str]  #: ``dense`` and/or ``multicrop``
    flip: bool = True
    grid: int = 5
    batch_size: int = 16  #: images of one size per forward pass
    crop_batch: int = 128  #: crops per multi-crop pass
    max_buffered: int = 256  #: most rescaled images held while waiting for a full batch
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    channels_last: bool = False
    bf16: bool = False  #: autocast (changes results slightly)


@dataclass
class LocalResults:
    """What one process computed: positions in the data, keys, labels, posteriors per (net, method, Q), failures."""

    indices: list[int] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    arrays: dict[tuple[int, str, int], np.ndarray] = field(default_factory=dict)  #: len(indices) x C each
    failed: list[dict[str, Any]] = field(default_factory=list)


class _Buckets:
    """Rescaled images waiting for a batch, keyed by (Q, height, width)."""

    def __init__(self, nets: list[EvalNet], how: EvalSettings) -> None:
        self.nets, self.how = nets, how
        self.rows: dict[tuple[int, str, int], dict[int, np.ndarray]] = {}  # (net, method, Q) -> position -> row
        self.waiting: dict[tuple[int, int, int], list[tuple[int, torch.Tensor]]] = {}
        self.buffered = 0
        self.scales = sorted({q for n in nets for q in n.scales})

    def add(self, pos: int, image: Image.Image) -> None:
        for q in self.scales:
            t = pil_to_tensor(isotropic_resize(image, q))
            key = (q, int(t.shape[1]), int(t.shape[2]))
            self.waiting.setdefault(key, []).append((pos, t))
            self.buffered += 1
            if len(self.waiting[key]) >= self.how.batch_size:
                self.run(key)
        while self.buffered > self.how.max_buffered:  # many distinct sizes: run the fullest buckets
            self.run(max(self.waiting, key=lambda k: len(self.waiting[k])))

    def run(self, key: tuple[int, int, int]) -> None:
        items = self.waiting.pop(key)
        self.buffered -= len(items)
        q, how, positions = key[0], self.how, [p for p, _ in items]
        x8 = torch.stack([t for _, t in items]).to(how.device)
        for i, net in enumerate(self.nets):
            if q not in net.scales:
                continue
            x = normalize(x8, net.norm)
            if how.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(how.device, how.bf16):
                for m in how.methods:
                    if m == "dense":
                        p = dense_evaluate(net.model, x, flip=how.flip)
                    else:
                        p = multi_crop(net.model, x, grid=how.grid, flip=how.flip, crop_batch=how.crop_batch)
                    store = self.rows.setdefault((i, m, q), {})
                    for pos, row in zip(positions, p.float().cpu().numpy(), strict=False):
                        store[pos] = row

    def arrays(self, n: int) -> dict[tuple[int, str, int], np.ndarray]:
        """Every image's posteriors (``n`` of them) per (net, method, Q) after running every bucket left (none for
        no image: the data then has no posteriors to report)."""
        for key in sorted(self.waiting):
            self.run(key)
        out = {}
        for key in sorted((i, m, q) for i, net in enumerate(self.nets) for m in self.how.methods for q in net.scales
                          if n):
            arr = np.zeros((n, self.nets[key[0]].model.cfg.num_classes), dtype=np.float32)
            by_pos = self.rows.get(key, {})
            if len(by_pos) != n:
                raise RuntimeError(f"posteriors {key}: {len(by_pos)} of {n} images computed")
            for pos, row in by_pos.items():
                arr[pos] = row
            out[key] = arr
        return out


def evaluate_items(samples: Iterable[tuple[int, Sample]], nets: list[EvalNet], how: EvalSettings,
                   on_image: Callable[[], Any] | None = None) -> LocalResults:
    """Evaluate every (position in the data, sample) of this process's share with every net, method and scale;
    ``on_image`` is called after each image is read. Undecodable images are listed in ``failed``."""
    results = LocalResults()
    buckets = _Buckets(nets, how)
    for index, s in samples:
        if s.image is None:
            results.failed.append({"index": index, "key": s.key, "reason": s.error or "unreadable"})
        else:
            buckets.add(len(results.indices), s.image)
            results.indices.append(index)
            results.keys.append(s.key)
            results.labels.append(int(s.label) if s.label is not None else -1)
        if on_image is not None:
            on_image()
    results.arrays = buckets.arrays(len(results.indices))
    return results


def broadcast(obj: Any, env: DistEnv | None) -> Any:
    """Process 0's ``obj`` on every process."""
    if env is None or env.world == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_results(local: LocalResults, env: DistEnv) -> LocalResults | None:
    """Every process's results on process 0, in data order; None on the other processes."""
    parts = [local]
    if env.world > 1:
        import torch.distributed as dist

        parts = [None] * env.world if env.main else None  # type: ignore[list-item]
        dist.gather_object(local, parts, dst=0)
        if not env.main:
            return None
    order = np.argsort(np.concatenate([np.asarray(p.indices, dtype=np.int64) for p in parts]), kind="stable")
    keys, labels = [k for p in parts for k in p.keys], [y for p in parts for y in p.labels]
    return LocalResults(indices=sorted(i for p in parts for i in p.indices), keys=[keys[i] for i in order],
                        labels=[labels[i] for i in order],
                        arrays={k: np.concatenate([p.arrays[k] for p in parts if k in p.arrays])[order]
                                for k in sorted({k for p in parts for k in p.arrays})},
                        failed=sorted((f for p in parts for f in p.failed), key=lambda f: f["index"]))


def checkpoint_test_scales(scales: list[int] | str, ckpt: dict[str, Any], crop: int, where: str
                           ) -> tuple[list[int], list[str]]:
    """Test scales Q of one checkpoint (a list, or ``multi`` / ``single`` from its training scale, Tables 3-4),
    and notes about defaults left out: explicit scales below the crop are an error, default ones are dropped."""
    if isinstance(scales, list):
        if not scales:
            raise UserError("scales: give at least one test scale")
        low = [q for q in scales if q < crop]
        if low:
            raise UserError(f"test scales {low} are below the crop size {crop} of {where}; Q must be >= {crop}")
        return sorted(set(scales)), []
    ts = train_scale_of(ckpt)
    if ts is None:
        raise UserError(f"{where} records no training scale (meta.train_scale); pass --scales")
    qs = [ts.single_test_scale()] if scales == "single" else ts.test_scales(crop)
    kept = sorted({q for q in qs if q >= crop})
    if not kept:
        raise UserError(f"{where}: all default test scales {qs} are below the crop size {crop}; pass --scales")
    notes = [f"{where}: default scale(s) {sorted(set(qs) - set(kept))} below the crop {crop} left out"] \
        if len(kept) < len(set(qs)) else []
    return kept, notes


def load_nets(paths: list[str], scales: list[int] | str, names: list[str] | None, how: EvalSettings
              ) -> tuple[list[EvalNet], list[dict[str, Any]], list[str]]:
    """The nets on ``how.device`` with their normalisation and test scales; what the results record of each
    (label, checkpoint and its sha256, model, training scale, ...); notes about the scales."""
    from pipeline.models import load_model

    if names is not None and len(names) != len(paths):
        raise UserError(f"names: {len(names)} names for {len(paths)} checkpoints")
    nets, infos, notes = [], [], []
    for i, path in enumerate(paths):
        model, ck = load_model(path)
        qs, n = checkpoint_test_scales(scales, ck, model.cfg.crop, path)
        notes += n
        model = model.to(how.device)
        if how.channels_last:
            model = model.to(memory_format=torch.channels_last)
        norm, ts = normalization_of(ck), train_scale_of(ck)
        meta = ck.get("meta") or {}
        nets.append(EvalNet(model=model, norm=norm, scales=qs))
        infos.append({
            "label": names[i] if names else model.cfg.config, "checkpoint": str(path),
            "sha256": sha256_file(path), "model": model.cfg.model_dump(mode="json"),
            "train_scale": ts.model_dump() if ts else None, "normalization": norm.model_dump(mode="json"),
            "scales": qs, "classes": meta.get("classes"), "dataset_fingerprint": meta.get("dataset_fingerprint"),
        })
    return nets, infos, notes


def check_classes(infos: list[dict[str, Any]], classes: list[str]) -> None:
    """Every net predicts the data's classes, in the data's order."""
    for info in infos:
        n = info["model"]["num_classes"]
        if n != len(classes):
            raise UserError(f"{info['checkpoint']} predicts {n} classes but the data has {len(classes)}")
        if info["classes"] is not None and list(info["classes"]) != list(classes):
            diff = next(i for i, (a, b) in enumerate(zip(info["classes"], classes, strict=False)) if a != b)
            raise UserError(f"{info['checkpoint']} was trained on other classes than the data "
                            f"(class {diff}: {info['classes'][diff]!r} vs {classes[diff]!r})")
