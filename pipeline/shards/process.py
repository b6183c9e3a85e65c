"""One image into one shard sample (paper 3.1: the smaller side isotropically rescaled to at most S_max = 512),
and the ordered, bounded map over worker processes it runs in (the data-parallel pre-processing, on one machine);
docs/shards.md says how an image is prepared and why the shards do not depend on the number of workers."""

from __future__ import annotations

import io
import itertools
import json
import math
import multiprocessing as mp
import os
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from PIL import Image

from pipeline import signals
from pipeline.images import ImageError, decode_rgb
from pipeline.runtime import Progress, cpu_count
from pipeline.shards.config import ShardConfig
from pipeline.sources.base import Record

__all__ = ["Prepared", "Skipped", "prepare_sample", "prepare_many", "target_size", "scale_boxes", "skip_category",
           "WorkerPool", "map_shards"]

T = TypeVar("T")

_ORIENTATION = 0x0112


@dataclass
class Prepared:
    """A sample ready for the tar writer."""

    key: str
    jpg: bytes
    cls: int | None
    meta: dict[str, Any]

    def sample(self) -> dict[str, Any]:
        """The webdataset sample dict (``__key__``, ``jpg``, ``cls``, ``json``)."""
        s: dict[str, Any] = {"__key__": self.key, "jpg": self.jpg,
                             "json": json.dumps(self.meta, sort_keys=True).encode("utf-8")}
        if self.cls is not None:
            s["cls"] = str(self.cls).encode("ascii")
        return s


@dataclass
class Skipped:
    """A record that could not be used, with its one-line reason."""

    key: str
    path: str | None
    reason: str


def target_size(w: int, h: int, max_side: int | None) -> tuple[int, int]:
    """(w, h) after an isotropic resize so the smaller side is at most ``max_side``; never upscales."""
    if max_side is None or min(w, h) <= max_side:
        return w, h
    s = max_side / min(w, h)
    if w <= h:
        return max_side, max(1, round(h * s))
    return max(1, round(w * s)), max_side


def scale_boxes(boxes: list[dict[str, Any]] | None, sx: float, sy: float) -> list[dict[str, Any]] | None:
    """Boxes with their coordinates multiplied by (sx, sy) (source pixels -> stored pixels)."""
    scale = {"xmin": sx, "xmax": sx, "ymin": sy, "ymax": sy}
    return None if boxes is None else [{k: v if k not in scale or v is None else round(float(v) * scale[k], 2)
                                        for k, v in b.items()} for b in boxes]


def skip_category(reason: str) -> str:
    """The summary category of a skip reason (its text before any ':' or '(')."""
    return reason.split(":", 1)[0].split(" (", 1)[0].strip()


def _header(data: bytes) -> tuple[str | None, str, tuple[int, int], int]:
    """(format, mode, raw size, EXIF orientation) read from the header only."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = Image.open(io.BytesIO(data))
            try:
                orient = int(im.getexif().get(_ORIENTATION, 1) or 1)
            except Exception:  # noqa: BLE001 - broken EXIF: decode_rgb decides
                orient = 1
            return im.format, im.mode, im.size, orient
    except Exception:  # noqa: BLE001 - decode_rgb gives the reason
        return None, "", (0, 0), 1


def prepare_sample(rec: Record, opts: ShardConfig) -> Prepared | Skipped:
    """Decode, convert, resize and encode one record as ``opts`` say; a :class:`Skipped` with the reason on
    failure."""
    src = rec.extras.get("source_path") or (str(rec.path) if rec.path is not None else None)
    if rec.extras.get("skip"):  # the reader found the file but cannot use it (e.g. no label)
        return Skipped(rec.key, src, str(rec.extras["skip"]))
    try:
        data = rec.read_bytes()
    except OSError as e:
        return Skipped(rec.key, src, f"unreadable: {e.strerror or e}")
    fmt, mode, (rw, rh), orient = _header(data)
    ow, oh = (rh, rw) if orient in (5, 6, 7, 8) else (rw, rh)  # oriented (original) size
    tw, th = target_size(ow, oh, opts.max_side)
    keep = (opts.keep_original and fmt == "JPEG" and mode == "RGB" and orient == 1 and (tw, th) == (ow, oh))
    draft = None
    if fmt == "JPEG" and opts.draft and rw > 0:
        if keep:  # only validate the full stream; 1/8 scale decode reads every entropy-coded byte
            draft = (max(1, rw // 8), max(1, rh // 8))
        elif 2 * tw <= ow:
            s = tw / ow
            draft = (math.ceil(rw * s), math.ceil(rh * s))
    try:
        img = decode_rgb(data, max_pixels=opts.max_pixels, draft_size=draft)
    except ImageError as e:
        return Skipped(rec.key, src, str(e))
    if keep:
        jpg = data
    else:
        if img.size != (tw, th):
            img = img.resize((tw, th), Image.BICUBIC, reducing_gap=None)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=opts.quality)
        jpg = buf.getvalue()
    meta: dict[str, Any] = {"key": rec.key, "source_path": src, "size": [ow, oh], "stored_size": [tw, th]}
    meta.update({k: v for k, v in rec.extras.items() if k != "source_path"})
    labels = {"label": rec.label, "labels": None if rec.labels is None else list(rec.labels),
              "boxes": scale_boxes(rec.boxes, tw / ow, th / oh)}
    meta.update({k: v for k, v in labels.items() if v is not None})
    return Prepared(rec.key, jpg, rec.label, meta)


def prepare_many(recs: list[Record], opts: ShardConfig) -> list[Prepared | Skipped]:
    """:func:`prepare_sample` over a chunk (one task of a worker process)."""
    out: list[Prepared | Skipped] = []
    for r in recs:
        try:
            out.append(prepare_sample(r, opts))
        except Exception as e:  # noqa: BLE001 - nothing about one image may crash the run
            out.append(Skipped(r.key, str(r.path) if r.path else None, f"failed: {type(e).__name__}: {e}"))
    return out


class WorkerPool:
    """``with WorkerPool(n) as pool: for r in pool.ordered_map(fn, chunks, *args): ...`` (``n == 1``: in this
    process). Workers are forked where the platform allows it (create the pool before starting threads such as a
    progress bar) and leave SIGINT / SIGTERM to this process (:func:`pipeline.signals.worker_init`)."""

    def __init__(self, workers: int, in_flight: int = 4) -> None:
        self.workers, self.in_flight = workers, in_flight
        self.pool = None

    def __enter__(self) -> WorkerPool:
        if self.workers > 1:
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            with signals.blocked():
                self.pool = ctx.Pool(self.workers, initializer=signals.worker_init, initargs=(os.getpid(),))
        return self

    def __exit__(self, exc_type, *_exc) -> None:
        if self.pool is not None:
            if exc_type is None:
                self.pool.close()
                self.pool.join()
            else:
                self.pool.terminate()
            self.pool = None

    def ordered_map(self, fn: Callable[..., T], chunks: Iterable[Any], *args: Any) -> Iterator[T]:
        """Yield ``fn(chunk, *args)`` for every chunk, in order; at most ``in_flight * workers`` queued."""
        if self.pool is None:
            yield from (fn(c, *args) for c in chunks)
            return
        it = iter(chunks)
        queued = self.in_flight * self.workers
        pending = deque(self.pool.apply_async(fn, (c, *args)) for c in itertools.islice(it, queued))
        while pending:
            result = pending.popleft().get()
            pending.extend(self.pool.apply_async(fn, (c, *args)) for c in itertools.islice(it, 1))
            yield result


def map_shards(fn: Callable[[Any], T], tasks: list[Any], workers: int, progress: bool, label: str) -> Iterator[T]:
    """``fn(task)`` of one task per shard, in order, over at most ``workers`` processes (0: all cores), with a
    progress bar."""
    with WorkerPool(min(workers or cpu_count(), max(1, len(tasks))), in_flight=2) as pool, \
            Progress(len(tasks), label, progress, unit="shards") as bar:
        for r in pool.ordered_map(fn, tasks):
            yield r
            bar.advance(1)
