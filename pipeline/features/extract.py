"""The extract stage (paper Appendix B): describe every image of a dataset into a feature store.

``run_extract(ExtractConfig)`` loads one checkpoint (or two, for late fusion), lists the data,
and writes the raw multi-scale descriptors of :mod:`pipeline.features.descriptor` into the HDF5
store of :mod:`pipeline.features.store`:

- Reuse (the one rule of :mod:`pipeline.reuse`): a finished store built from the same inputs (its
  recorded identity: checkpoint sha256, dataset fingerprint and split, scales, flip, boxes, dtype,
  precision) is left alone and named once it passes a full check (every dataset present with its
  shape, checksums, finite rows; see :mod:`pipeline.features.verify`); a damaged one is refused
  (``overwrite`` rebuilds it), as is a store built from other inputs.
- Resume: an unfinished store with the same inputs continues from its ``done`` mask. Batches are
  aligned to fixed row blocks, so a resumed store equals an uninterrupted one.
- Scale out: under ``torchrun`` (``WORLD_SIZE`` > 1, gloo or NCCL) each rank describes a contiguous
  block of batches into a part file; rank 0 merges the parts in source order. ``part="i/n"`` does
  one part without torch.distributed (Prefect fan-out) and ``merge=True`` combines them.

Decoding and rescaling run in a background thread, one batch ahead of the forward passes.
"""

from __future__ import annotations

import queue
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator

import pipeline
from pipeline.errors import UserError
from pipeline.features.descriptor import Net, box_crops, describe, prepare_images, resolve_scales
from pipeline.features.inputs import ExtractInput
from pipeline.features.store import (
    FORMAT,
    StoreLayout,
    StoreOutput,
    StoreWriter,
    create_store,
    failed_log_path,
    merge_parts,
    part_path,
)
from pipeline.io import atomic_path, sha256_file
from pipeline.locks import exclusive
from pipeline.models import load_model
from pipeline.preprocess import normalization_of
from pipeline.results import ExtractResult
from pipeline.reuse import Decision, check_reusable
from pipeline.runtime import DistEnv, Progress, RuntimeStageConfig, resolve_bf16, start_distributed, stop_distributed

__all__ = ["ExtractConfig", "run_extract"]

#: called after each flushed batch with (images handled, images in this process's share)
OnProgress = Callable[[int, int], None]

class ExtractConfig(RuntimeStageConfig):
    """Configuration of ``vgg extract`` (paper Appendix B)."""

    checkpoints: list[str] = Field(
        default_factory=list,
        max_length=2,
        description="one checkpoint, or two whose descriptors are stacked (late fusion: net0, net1)",
    )
    data: str | None = Field(
        None, description="shard folder or source dataset (ImageFolder, VOC, Caltech, ILSVRC, manifest)"
    )
    split: str | None = Field(None, description="split to describe (default: the only split, else val, else test)")
    format: str = Field("auto", description="source layout (auto detects); ignored for shard folders")
    out: str = Field("features.h5", description="feature store to write (HDF5)")
    scales: list[int] | Literal["paper", "voc"] = Field(
        "paper", description="test scales Q (smallest side): a list, or paper = 256,384,512, voc = 256,...,768")
    relative: bool = Field(False, description="multiply the scales by crop/256 (a crop-32 net: paper -> 32,48,64)")
    flip: bool = Field(True, description="average each descriptor with the horizontally flipped image's")
    boxes: bool = Field(False, description="also describe the box crops (region descriptors, Table 12)")
    aggregate: Literal["avg", "stack"] = Field("avg", description="readers' default aggregation over scales")
    l2: Literal["aggregate", "net", "scale", "both", "none"] = Field(
        "aggregate", description="readers' default L2 placement (aggregate = on the final descriptor, the paper)")
    dtype: Literal["float32", "float16"] = Field("float32", description="storage type of the descriptors")
    batch_size: int = Field(32, ge=1, description="images per batch (one done-mask flush per batch)")
    max_pixels: int = Field(1 << 22, ge=1, description="input pixels (images and flips) per forward pass")
    prefetch: int = Field(2, ge=1, description="batches decoded and rescaled ahead by the reader thread")
    overwrite: bool = Field(False, description="replace a store built from other inputs")
    part: str | None = Field(None, description="'i/n': describe only part i of n (fan-out without torchrun)")
    merge: bool = Field(False, description="combine the finished parts of --out instead of extracting")
    progress: bool = Field(True, description="progress bar (images/s) on a terminal, a progress artifact in a flow")

    @field_validator("part")
    @classmethod
    def _part_form(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from pipeline.shards.config import parse_part  # the one reader of part specs

        try:
            parse_part(v)
        except UserError as e:
            raise ValueError(str(e)) from None
        return v


@dataclass
class _Batch:
    start: int  # absolute first row
    keys: list[str]
    ok: np.ndarray
    failures: list[tuple[int, str, str]]  # absolute row, id, reason
    prepared: dict
    crops: dict | None
    owners: np.ndarray | None  # crop -> position among the ok images
    n_ok: int


def _load_nets(paths: list[str], device: torch.device, channels_last: bool) -> tuple[list[Net], list[dict[str, Any]]]:
    nets, info = [], []
    for i, p in enumerate(paths):
        model, ck = load_model(p)
        norm = normalization_of(ck)
        nets.append(Net(model, norm, f"net{i}").to(device, channels_last))
        info.append({"path": str(Path(p).resolve()), "sha256": sha256_file(p), "model": ck["model"],
                     "normalization": norm.model_dump(mode="json"),
                     "classes": len((ck.get("meta") or {}).get("classes") or []) or None})
    return nets, info


def _row_blocks(n: int, batch: int, index: int, count: int) -> tuple[int, int]:
    """Rows [start, stop) of part ``index`` of ``count``: a contiguous block of whole batches."""
    nb = -(-n // batch)
    b0, b1 = index * nb // count, (index + 1) * nb // count
    return min(b0 * batch, n), min(b1 * batch, n)


def _produce(inp: ExtractInput, todo: list[tuple[int, int]], cfg: ExtractConfig, scales: list[int],
             q: queue.Queue, stop: threading.Event) -> None:
    """Reader thread: decode, crop and rescale the images of each batch, in order."""

    def put(x: Any) -> None:
        while not stop.is_set():
            try:
                q.put(x, timeout=0.2)
                return
            except queue.Full:
                continue

    try:
        items = inp.items(r for s, e in todo for r in range(s, e))
        for s, e in todo:
            batch = [next(items) for _ in range(e - s)]
            good = [it for it in batch if it.image is not None]
            prepared = prepare_images([it.image for it in good], scales, cfg.flip, cfg.max_pixels)
            crops = owners = None
            if cfg.boxes:
                imgs, own = [], []
                for j, it in enumerate(good):
                    for c in box_crops(it.image, it.boxes or []):
                        imgs.append(c)
                        own.append(j)
                crops = prepare_images(imgs, scales, cfg.flip, cfg.max_pixels)
                owners = np.asarray(own, dtype=np.int64)
            put(_Batch(s, [it.key for it in batch], np.asarray([it.image is not None for it in batch]),
                       [(it.row, it.key, it.error or "no image") for it in batch if it.image is None],
                       prepared, crops, owners, len(good)))
            if stop.is_set():
                return
        put(None)
    except BaseException as e:  # noqa: BLE001 - handed to the main thread
        put(e)


def _regions(whole: np.ndarray, region_desc: np.ndarray, owners: np.ndarray) -> np.ndarray:
    """Average box descriptors per image; images without boxes keep their whole-image descriptor."""
    out = whole.copy()
    if len(owners):
        sums = np.zeros_like(whole)
        np.add.at(sums, owners, region_desc)
        counts = np.bincount(owners, minlength=len(whole))
        has = counts > 0
        out[has] = sums[has] / counts[has][:, None, None]
    return out


def _extract_into(path: Path, inp: ExtractInput, nets: list[Net], scales: list[int], cfg: ExtractConfig,
                  device: torch.device, rows: tuple[int, int], precision: str, show: bool,
                  on_progress: OnProgress | None) -> dict[str, Any]:
    """Describe rows [start, stop) into the store at ``path`` (local row 0 = ``start``), then finish it."""
    start, stop = rows
    writer = StoreWriter(path)
    try:
        processed = writer.processed()
        bs = cfg.batch_size
        todo = [(s, min(s + bs, stop)) for s in range(start, stop, bs)
                if not processed[s - start: min(s + bs, stop) - start].all()]
        total, done_count = stop - start, int(processed.sum())
        bar = Progress(total, f"extract {path.name}", enabled=show, start=done_count).__enter__()
        if on_progress:
            on_progress(done_count, total)
        q: queue.Queue = queue.Queue(maxsize=cfg.prefetch)
        stop_ev = threading.Event()
        reader = threading.Thread(target=_produce, args=(inp, todo, cfg, scales, q, stop_ev), daemon=True)
        t0, described = time.perf_counter(), 0
        reader.start()
        try:
            while True:
                b = q.get()
                if b is None:
                    break
                if isinstance(b, BaseException):
                    raise b
                n = len(b.keys)
                descs, regs = [], []
                for net in nets:
                    d_ok = describe(net, b.prepared, b.n_ok, flip=cfg.flip, device=device,
                                    precision=precision, channels_last=cfg.runtime.channels_last)
                    d = np.zeros((n, len(scales), net.dim), dtype=np.float32)
                    d[b.ok] = d_ok
                    descs.append(d)
                    if cfg.boxes:
                        r_crops = describe(net, b.crops, len(b.owners), flip=cfg.flip, device=device,
                                           precision=precision, channels_last=cfg.runtime.channels_last)
                        r = np.zeros_like(d)
                        r[b.ok] = _regions(d_ok, r_crops, b.owners)
                        regs.append(r)
                writer.write_batch(b.start - start, descs, b.ok,
                                   [(r - start, k, why) for r, k, why in b.failures], regs if cfg.boxes else None)
                described += b.n_ok
                bar.advance(n)
                if on_progress:
                    on_progress(bar.done, total)
        finally:
            stop_ev.set()
            reader.join(timeout=10)
            bar.__exit__(*sys.exc_info())
        seconds = time.perf_counter() - t0
        writer.finalize()
        return {"described": described, "seconds": seconds, "failed": len(writer.failed),
                "images_per_s": described / seconds if seconds > 0 and described else 0.0}
    finally:
        writer.close()


def _decide(path: Path, identity: dict[str, Any], overwrite: bool, clean: bool = True) -> Decision:
    """``reuse``, ``resume`` or ``build`` for a store or part at ``path`` (:func:`pipeline.reuse.check_reusable`).

    The structural check reads a finished store whole (checksums, finite rows) and checks an
    unfinished one for structure (every dataset present with its shape) before it is resumed.
    Other inputs and damaged stores are refused; with ``overwrite`` they are removed (``clean``).
    Without ``clean`` (the whole store while parts are written) an unfinished store is not looked
    into: the merged parts replace it.
    """

    return check_reusable(StoreOutput(path, look_into_unfinished=clean), identity, overwrite)


def _create(path: Path, layout: StoreLayout) -> None:
    with atomic_path(path) as tmp:
        create_store(tmp, layout, label=path)


def _merge_only(cfg: ExtractConfig) -> dict[str, Any]:
    out = Path(cfg.out)
    pattern = re.compile(re.escape(out.name) + r"\.part-(\d+)-of-(\d+)$")
    counts = {int(m.group(2)) for p in out.parent.glob(f"{out.name}.part-*") if (m := pattern.match(p.name))}
    if not counts:
        raise UserError(f"no parts of {out} to merge (expected {out.name}.part-000-of-NNN ...)")
    if len(counts) > 1:
        raise UserError(f"parts of {out} from runs with different part counts {sorted(counts)}; remove the stale ones")
    count = counts.pop()
    want = [part_path(out, i, count) for i in range(count)]
    missing = [p.name for p in want if not p.exists()]
    if missing:
        raise UserError(f"cannot merge {out}: missing part(s) {', '.join(missing)}")
    merge_parts(out, want)
    for p in want:
        p.unlink()
    return {"status": "merged", "path": str(out), "parts": count}


def run_extract(cfg: ExtractConfig, on_progress: OnProgress | None = None) -> ExtractResult:
    """Describe a dataset with one or two nets into a feature store (paper Appendix B).

    Args:
        cfg: the stage configuration.
        on_progress: optional hook ``(images handled, images in this process's share)`` after each
            flushed batch (progress itself is shown by the stage: ``cfg.progress``).
    Returns:
        ``status`` (``written``, ``resumed``, ``exists``, ``part`` or ``merged``), ``path``, counts,
        ``scales``, ``dims`` and, when images were described, ``images_per_s``.
    Raises:
        UserError: unreadable checkpoint or data, a scale below the crop size, no boxes for
            ``boxes=True``, or an existing store built from other inputs (without ``overwrite``).
    """
    if cfg.merge:
        return ExtractResult(**_merge_only(cfg))
    out = Path(cfg.out)
    if not cfg.checkpoints or cfg.data is None:
        raise UserError("extract needs one or two checkpoints and --data (or --merge to combine finished parts)")
    env = start_distributed(cfg.runtime.device)
    try:
        index, count = (int(x) for x in cfg.part.split("/")) if cfg.part is not None else (env.rank, env.world)
        out.parent.mkdir(parents=True, exist_ok=True)
        part = "" if count == 1 else f".part{index}of{count}"
        with exclusive(out.parent / f".{out.name}{part}.lock", f"feature store {out}{part and ' (' + part[1:] + ')'}"):
            return ExtractResult(**_run(cfg, out, env, on_progress))
    finally:
        stop_distributed(env)


def _run(cfg: ExtractConfig, out: Path, env: DistEnv, on_progress: OnProgress | None) -> dict[str, Any]:
    rank, world, device = env.rank, env.world, env.device
    precision = "bf16" if resolve_bf16(cfg.runtime.bf16, device) else "fp32"
    nets, ck_info = _load_nets(cfg.checkpoints, device, cfg.runtime.channels_last)
    scales = resolve_scales(cfg.scales, max(n.crop for n in nets), cfg.relative)
    inp = ExtractInput(cfg.data, cfg.split, cfg.format)
    if not inp.entries:
        raise UserError(f"{cfg.data}: split {inp.split!r} has no images")
    if cfg.boxes and not any(e.boxes for e in inp.entries):
        raise UserError(f"{cfg.data}: no boxes in split {inp.split!r}; --boxes needs a source with boxes (VOC, ILSVRC)")
    identity = {"format": FORMAT, "checkpoints": [c["sha256"] for c in ck_info], "data": inp.fingerprint,
                "kind": inp.kind, "split": inp.split, "scales": scales, "flip": cfg.flip, "boxes": cfg.boxes,
                "dtype": cfg.dtype, "precision": precision}
    base = {"path": str(out), "scales": scales, "dims": [n.dim for n in nets], "images": len(inp.entries)}

    n = len(inp.entries)
    if cfg.part is not None:
        index, count = (int(x) for x in cfg.part.split("/"))
    else:
        index, count = rank, world
    in_place = count == 1
    # A finished, whole store from the same inputs: nothing to do (parts are checked on their own).
    state = _decide(out, identity, cfg.overwrite, clean=in_place)
    if state == "reuse":
        _update_read_defaults(out, cfg)
        return {**base, "status": "exists"}
    if -(-n // cfg.batch_size) < count:
        raise UserError(f"{n} images make {-(-n // cfg.batch_size)} batches of {cfg.batch_size}, fewer than the "
                        f"{count} parts; use a smaller --batch-size or fewer processes")
    target = out if in_place else part_path(out, index, count)
    rows = _row_blocks(n, cfg.batch_size, index, count)
    if not in_place:
        state = _decide(target, identity, cfg.overwrite)
    labels = _labels(inp)
    provenance = {
        "config": cfg.model_dump(mode="json"), "checkpoints": ck_info,
        "data": {**inp.describe(), "path": str(Path(cfg.data).resolve())},
        "scales": scales, "flip": cfg.flip, "boxes": cfg.boxes, "dtype": cfg.dtype, "precision": precision,
        "pipeline_version": pipeline.__version__, "torch_version": torch.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "identity": identity,
    }
    stats: dict[str, Any] = {"described": 0, "failed": 0}
    if state != "reuse" and rows[1] > rows[0]:
        if state == "build":
            _create(target, StoreLayout(
                ids=[e.key for e in inp.entries[rows[0]:rows[1]]], labels=labels[rows[0]:rows[1]],
                label_kind=inp.label_kind, classes=inp.classes, dims=[n.dim for n in nets], scales=scales,
                provenance=provenance, identity=identity, dtype=cfg.dtype, regions=cfg.boxes,
                aggregate=cfg.aggregate, l2=cfg.l2, row_start=rows[0], rows_total=n,
                part=None if in_place else (index, count), batch_rows=cfg.batch_size))
        stats = _extract_into(target, inp, nets, scales, cfg, device, rows, precision,
                              cfg.progress and (env.main or cfg.part is not None), on_progress)
    result = {**base, **stats, "status": "resumed" if state == "resume" else "written"}
    if in_place:
        return result
    if cfg.part is not None:
        return {**result, "status": "part", "path": str(target), "part": cfg.part}
    # torchrun: every rank has finished its part; rank 0 merges them in source order.
    import torch.distributed as dist

    dist.barrier()
    if rank == 0:
        parts = [part_path(out, i, count) for i in range(count)]
        merge_parts(out, parts)
        for p in parts:
            p.unlink()
        failed_log_path(out).unlink(missing_ok=True)  # of an earlier, unfinished single-process run
    dist.barrier()
    return {**result, "status": "merged" if rank == 0 else result["status"], "rank": rank, "world": world}


def _labels(inp: ExtractInput) -> np.ndarray:
    if inp.label_kind == "multi":
        c = len(inp.classes)
        lab = np.zeros((len(inp.entries), c), dtype=np.int8)
        for i, e in enumerate(inp.entries):
            if e.labels is not None:
                if len(e.labels) != c:
                    raise UserError(f"{e.key}: {len(e.labels)} labels for {c} classes")
                lab[i] = e.labels
        return lab
    return np.asarray([-1 if e.label is None else int(e.label) for e in inp.entries], dtype=np.int64)


def _update_read_defaults(out: Path, cfg: ExtractConfig) -> None:
    """A reused store takes the requested read defaults (aggregate, l2); its data is unchanged."""
    import h5py

    with h5py.File(out, "r", locking=False) as f:
        same = f.attrs["aggregate"] == cfg.aggregate and f.attrs["l2"] == cfg.l2
    if not same:
        try:
            with h5py.File(out, "r+") as f:
                f.attrs["aggregate"] = cfg.aggregate
                f.attrs["l2"] = cfg.l2
        except OSError:  # read-only or in use: the data is what was asked for; keep the old defaults
            pass
