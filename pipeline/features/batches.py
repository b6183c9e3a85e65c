"""The images to describe (paper Appendix B), in batches: listed, decoded and prepared ``prefetch`` batches ahead
by a reader thread, described by every net, stored."""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.data import DataView, Entry, Item, open_data
from pipeline.errors import UserError
from pipeline.features.config import ExtractConfig
from pipeline.features.descriptor import Net, ScaleGroup, box_crops, describe, prepare_images, region_descriptors
from pipeline.features.store import StoreWriter
from pipeline.runtime import Progress

__all__ = ["ExtractInput", "OnProgress", "ExtractJob", "PreparedBatch", "extract_rows"]

#: called after each flushed batch with (images handled, images in this process's share)
OnProgress = Callable[[int, int], None]


class ExtractInput:
    """One split (default as :func:`open_data`) of a shard folder or source dataset (``format``: its layout)."""

    def __init__(self, path: str | os.PathLike[str], split: str | None = None, format: str = "auto") -> None:
        self.view: DataView = open_data(path, split, format)
        self.classes: list[str] = list(self.view.classes)
        self.kind: str = self.view.kind
        self.split: str = self.view.split
        self.label_kind: str = getattr(self.view, "label_kind", "single") or "single"
        self.entries: list[Entry] = self.view.entries()
        if any(e.labels is not None for e in self.entries):
            self.label_kind = "multi"
        self.fingerprint = str(self.view.fingerprint)

    def labels(self) -> np.ndarray:
        """Per entry, the class index (int64, -1 unknown); multi-label: an N x C int8 matrix of 1/-1/0."""
        if self.label_kind != "multi":
            return np.asarray([-1 if e.label is None else int(e.label) for e in self.entries], dtype=np.int64)
        c = len(self.classes)
        lab = np.zeros((len(self.entries), c), dtype=np.int8)
        for i, e in enumerate(self.entries):
            if e.labels is not None:
                if len(e.labels) != c:
                    raise UserError(f"{e.key}: {len(e.labels)} labels for {c} classes")
                lab[i] = e.labels
        return lab

    def items(self, rows: Iterable[int]) -> Iterator[Item]:
        """Decoded images of ``rows`` (increasing), in that order; refuses data that changed since listing."""
        for item in self.view.decode(rows):
            if item.key != self.entries[item.row].key:
                raise UserError(f"{self.view.split}: the data changed while reading (row {item.row}: {item.key!r}, "
                                f"expected {self.entries[item.row].key!r})")
            yield item

    def describe(self) -> dict[str, Any]:
        """Provenance of the data: kind, split, fingerprint, counts, classes."""
        return {"kind": self.kind, "split": self.split, "fingerprint": self.fingerprint,
                "count": len(self.entries), "classes": len(self.classes), "label_kind": self.label_kind}


@dataclass
class ExtractJob:
    """One process's share of an extraction: its nets and scales, the rows it describes, the file it writes."""

    cfg: ExtractConfig
    device: torch.device
    bf16: bool
    nets: list[Net]
    scales: list[int]
    inp: ExtractInput
    rows: tuple[int, int]  # [start, stop) of the dataset; local row 0 of the target is start
    target: Path
    show: bool
    on_progress: OnProgress | None


@dataclass
class PreparedBatch:
    """Rows ``start ..`` decoded and rescaled to every scale (and their box crops, with ``boxes``)."""

    start: int  # absolute first row
    keys: list[str]
    ok: np.ndarray  # decoded
    failures: list[tuple[int, str, str]]  # absolute row, id, reason
    prepared: dict[int, list[ScaleGroup]]  # of the decoded images
    crops: dict[int, list[ScaleGroup]] | None
    owners: np.ndarray | None  # crop -> position among the decoded images

    @property
    def n_ok(self) -> int:
        return int(self.ok.sum())


def _prepare(start: int, batch: list[Item], cfg: ExtractConfig, scales: list[int]) -> PreparedBatch:
    decoded = [it for it in batch if it.image is not None]
    crops = owners = None
    if cfg.boxes:
        pairs = [(j, c) for j, it in enumerate(decoded) for c in box_crops(it.image, it.boxes or [])]
        crops = prepare_images([c for _, c in pairs], scales, cfg.flip, cfg.max_pixels)
        owners = np.asarray([j for j, _ in pairs], dtype=np.int64)
    return PreparedBatch(start, [it.key for it in batch], np.asarray([it.image is not None for it in batch]),
                         [(it.row, it.key, it.error or "no image") for it in batch if it.image is None],
                         prepare_images([it.image for it in decoded], scales, cfg.flip, cfg.max_pixels), crops, owners)


def _prefetched(inp: ExtractInput, todo: list[tuple[int, int]], cfg: ExtractConfig,
               scales: list[int]) -> Iterator[PreparedBatch]:
    """The batches ``todo`` (row ranges, increasing), prepared by a reader thread ``cfg.prefetch`` ahead;
    closing the iterator (``contextlib.closing``) stops the reader."""
    q: queue.Queue = queue.Queue(maxsize=cfg.prefetch)
    stop = threading.Event()

    def put(x: Any) -> None:
        while not stop.is_set():
            try:
                return q.put(x, timeout=0.2)
            except queue.Full:
                continue

    def produce() -> None:
        try:
            items = inp.items(r for s, e in todo for r in range(s, e))
            for s, e in todo:
                put(_prepare(s, [next(items) for _ in range(e - s)], cfg, scales))
                if stop.is_set():
                    return
            put(None)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            put(e)

    reader = threading.Thread(target=produce, daemon=True)
    reader.start()
    try:
        while (b := q.get()) is not None:
            if isinstance(b, BaseException):
                raise b
            yield b
    finally:
        stop.set()
        reader.join(timeout=10)


def extract_rows(job: ExtractJob) -> dict[str, Any]:
    """Describe the job's rows not yet done into its store, then finish the store."""
    (start, stop), bs = job.rows, job.cfg.batch_size
    writer = StoreWriter(job.target)
    try:
        processed = writer.processed()
        todo = [(s, min(s + bs, stop)) for s in range(start, stop, bs)
                if not processed[s - start: min(s + bs, stop) - start].all()]
        t0, described = time.perf_counter(), 0
        bar = Progress(stop - start, f"extract {job.target.name}", enabled=job.show, start=int(processed.sum()))
        with bar, closing(_prefetched(job.inp, todo, job.cfg, job.scales)) as batches:
            if job.on_progress:
                job.on_progress(bar.done, stop - start)
            for b in batches:
                descs, regions = _describe(job, b)
                writer.write_batch(b.start - start, descs, b.ok, [(r - start, k, why) for r, k, why in b.failures],
                                   regions)
                described += b.n_ok
                bar.advance(len(b.keys))
                if job.on_progress:
                    job.on_progress(bar.done, stop - start)
        seconds = time.perf_counter() - t0
        writer.finalize()
        return {"described": described, "seconds": seconds, "failed": len(writer.failed),
                "images_per_s": described / seconds if seconds > 0 and described else 0.0}
    finally:
        writer.close()


def _describe(job: ExtractJob, b: PreparedBatch) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Per net, the batch's descriptors (b x S x D; zeros for images not decoded) and, with boxes, its regions."""
    descs, regions = [], []
    kw = {"flip": job.cfg.flip, "device": job.device, "bf16": job.bf16,
          "channels_last": job.cfg.runtime.channels_last}
    for net in job.nets:
        d_ok = describe(net, b.prepared, b.n_ok, **kw)
        d = np.zeros((len(b.keys), len(job.scales), net.dim), dtype=np.float32)
        d[b.ok] = d_ok
        descs.append(d)
        if job.cfg.boxes:
            r = np.zeros_like(d)
            r[b.ok] = region_descriptors(d_ok, describe(net, b.crops, len(b.owners), **kw), b.owners)
            regions.append(r)
    return descs, regions if job.cfg.boxes else None
