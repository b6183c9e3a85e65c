"""One way for every stage after sharding to read images: ``open_data(path, split)``.

``path`` is a shard folder (``manifest.json``) or any source the readers know (ImageFolder,
ILSVRC, VOC, Caltech, CSV/JSONL manifest). The :class:`DataView` yields :class:`Sample` objects
in a stable order with decoded RGB images (paper 2.1); an image that cannot be decoded comes with
``image=None`` and ``error`` set, so callers record it instead of crashing.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from PIL import Image

from pipeline.errors import UserError
from pipeline.images import ImageError, decode_rgb

__all__ = ["Sample", "Entry", "Item", "DataView", "ShardView", "SourceView", "open_data"]

_DEFAULT_SPLITS = ("val", "test")


@dataclass
class Sample:
    """One image with its labels; ``boxes`` are in the coordinates of ``image``."""

    key: str
    image: Image.Image | None
    label: int | None
    labels: list[int] | None
    boxes: list[dict[str, Any]] | None
    error: str | None = None
    meta: dict[str, Any] | None = None


@dataclass
class Entry:
    """What is known of an image before decoding it: its key, labels and boxes."""

    key: str
    label: int | None
    labels: list[int] | None
    boxes: list[dict[str, Any]] | None


@dataclass
class Item:
    """A decoded image of one row (or the reason it could not be decoded)."""

    row: int
    key: str
    image: Image.Image | None
    error: str | None
    boxes: list[dict[str, Any]] | None


def _decoded(data: bytes) -> tuple[Image.Image | None, str | None]:
    try:
        return decode_rgb(data), None
    except ImageError as e:
        return None, str(e)


def _read_decoded(record: Any) -> tuple[Image.Image | None, str | None]:
    """A source record's image, or the reason it cannot be read or decoded."""
    try:
        return _decoded(record.read_bytes())
    except OSError as e:
        return None, f"unreadable: {e.strerror or e}"


def _pick_split(available: list[str], split: str | None, where: str) -> str:
    if split is not None:
        if split not in available:
            raise UserError(f"{where}: no split {split!r} (has {', '.join(available) or 'none'})")
        return split
    if len(available) == 1:
        return available[0]
    for s in _DEFAULT_SPLITS:
        if s in available:
            return s
    raise UserError(f"{where}: several splits ({', '.join(available)}); choose one")


class DataView(ABC):
    """A split of a dataset: ``classes``, ``kind``, ``split``, ``fingerprint``; iterate for samples.

    ``entries()`` lists the images without decoding them; ``decode(rows)`` decodes the images of
    some rows. Stages use these two and never need to know which kind of view they hold.
    """

    classes: list[str]
    kind: str
    split: str
    label_kind: str

    @property
    @abstractmethod
    def fingerprint(self) -> str:
        """A hash of the split's content (paths, sizes, labels) or of the shard manifest."""

    @abstractmethod
    def __iter__(self) -> Iterator[Sample]:
        """Samples in stable order."""

    @abstractmethod
    def __len__(self) -> int:
        """Number of images in the split."""

    @abstractmethod
    def entries(self) -> list[Entry]:
        """Every image of the split in order: key, labels, boxes (nothing decoded)."""

    @abstractmethod
    def decode(self, rows: Iterable[int]) -> Iterator[Item]:
        """The decoded images of ``rows`` (positions in :meth:`entries`), in increasing order."""


class ShardView(DataView):
    """A split of a shard folder (samples in shard order, images as stored)."""

    def __init__(self, path: Path, split: str | None) -> None:
        from pipeline.shards.reader import read_manifest

        self.path = path
        self.manifest = read_manifest(path)
        self.classes = list(self.manifest["classes"])
        self.kind = "shards"
        self.split = _pick_split(list(self.manifest["splits"]), split, str(path))
        self.label_kind = self.manifest.get("label_kind", "single")

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    def __len__(self) -> int:
        return int(self.manifest["splits"][self.split]["count"])

    def __iter__(self) -> Iterator[Sample]:
        from pipeline.shards.reader import iter_samples

        for s in iter_samples(self.path, self.split):
            meta = s["json"]
            img, err = _decoded(s["jpg"])
            yield Sample(key=s["__key__"], image=img, label=s["cls"], labels=meta.get("labels"),
                         boxes=meta.get("boxes"), error=err, meta=meta)

    def entries(self) -> list[Entry]:
        from pipeline.shards.reader import iter_samples

        out = []
        for s in iter_samples(self.path, self.split):
            meta = s["json"] or {}
            out.append(Entry(s["__key__"], s["cls"], meta.get("labels"), meta.get("boxes")))
        return out

    def decode(self, rows: Iterable[int]) -> Iterator[Item]:
        from pipeline.shards.reader import iter_samples

        want = set(int(r) for r in rows)
        if not want:
            return
        last = max(want)
        for row, s in enumerate(iter_samples(self.path, self.split)):  # one pass, in shard order
            if row > last:
                break
            if row in want:
                img, err = _decoded(s["jpg"])
                yield Item(row, s["__key__"], img, err, (s["json"] or {}).get("boxes"))


class SourceView(DataView):
    """A split of a source dataset (records in source order, images at full resolution)."""

    def __init__(self, path: Path, split: str | None, format: str, **options: Any) -> None:
        from pipeline.sources import open_source

        self.source = open_source(path, format, **options)
        self.classes = list(self.source.classes)
        self.kind = self.source.kind
        self.split = _pick_split(self.source.splits(), split, str(path))
        self.label_kind = getattr(self.source, "label_kind", "single")

    @cached_property
    def _records(self) -> list:
        return list(self.source.records(self.split))

    @cached_property
    def fingerprint(self) -> str:  # type: ignore[override]
        from pipeline.shards.reader import source_fingerprint

        return source_fingerprint(self.kind, self.classes, {self.split: self._records}, self.source.root)

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[Sample]:
        for r in self._records:
            if r.extras.get("skip"):  # found by the reader but not usable (e.g. no label)
                yield Sample(key=r.key, image=None, label=r.label, labels=r.labels, boxes=r.boxes,
                             error=str(r.extras["skip"]), meta=dict(r.extras))
                continue
            img, err = _read_decoded(r)
            meta = dict(r.extras)
            yield Sample(key=r.key, image=img, label=r.label, labels=r.labels, boxes=r.boxes, error=err, meta=meta)

    def entries(self) -> list[Entry]:
        return [Entry(r.key, r.label, r.labels, r.boxes) for r in self._records]

    def decode(self, rows: Iterable[int]) -> Iterator[Item]:
        for row in sorted(set(int(r) for r in rows)):  # records are read directly, by position
            rec = self._records[row]
            img, err = _read_decoded(rec)
            yield Item(row, rec.key, img, err, rec.boxes)


def open_data(path: str | os.PathLike[str], split: str | None = None, format: str = "auto", **options: Any) -> DataView:
    """Open a shard folder or a source dataset for reading.

    Args:
        path: a shard folder (with ``manifest.json``) or a dataset the source readers know.
        split: the split to read; default: the only split, else ``val``, else ``test``.
        format: source layout (``auto`` detects); ignored for shard folders.
        options: reader options (e.g. ``devkit=`` for ILSVRC val).
    Returns:
        A :class:`DataView` (``ShardView`` or ``SourceView``).
    Raises:
        UserError: path missing, layout unknown, or split missing.
    """
    p = Path(path)
    if not p.exists():
        raise UserError(f"not found: {p}")
    from pipeline.shards.reader import is_shard_dir

    if p.is_dir() and is_shard_dir(p):
        return ShardView(p, split)
    return SourceView(p, split, format, **options)
