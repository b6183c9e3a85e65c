"""One way for every stage after sharding to read images (paper 2.1): ``open_data(path, split)`` gives the same
:class:`DataView` of a shard folder and of any source the readers know (docs/design.md 6); an image that cannot
be decoded comes with ``image=None`` and ``error`` set, so callers record it instead of crashing.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from itertools import islice
from pathlib import Path
from typing import Any

from PIL import Image

from pipeline.errors import UserError
from pipeline.images import ImageError, decode_rgb

__all__ = ["Sample", "Entry", "Item", "DataView", "ShardView", "SourceView", "open_data"]

_DEFAULT_SPLITS = ("val", "test")


@dataclass
class Entry:
    """What is known of an image before decoding it: its key, labels and boxes (in the image's coordinates)."""

    key: str
    label: int | None
    labels: list[int] | None
    boxes: list[dict[str, Any]] | None


@dataclass
class Sample(Entry):
    """An entry with its decoded RGB image, or the reason it could not be decoded."""

    image: Image.Image | None = None
    error: str | None = None


@dataclass
class Item(Sample):
    """The sample of one row of :meth:`DataView.entries`."""

    row: int = -1


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
    if picked := next((s for s in _DEFAULT_SPLITS if s in available), None):
        return picked
    raise UserError(f"{where}: several splits ({', '.join(available)}); choose one")


class DataView(ABC):
    """A split of a dataset: ``classes``, ``kind``, ``split``, ``label_kind``, ``fingerprint`` (of the split's
    content or of the shard manifest) and ``len()``; iterating yields every :class:`Sample` in a stable order.
    """

    classes: list[str]
    kind: str
    split: str
    label_kind: str
    fingerprint: str

    @abstractmethod
    def entries(self) -> list[Entry]:
        """Every image of the split in order: key, labels, boxes (nothing decoded)."""

    @abstractmethod
    def decode(self, rows: Iterable[int]) -> Iterator[Item]:
        """The decoded images of ``rows`` (positions in :meth:`entries`), each once, in increasing order."""


class ShardView(DataView):
    """A split of a shard folder (samples in shard order, images as stored)."""

    kind = "shards"

    def __init__(self, path: Path, split: str | None) -> None:
        from pipeline.shards.reader import read_manifest

        self.path = path
        self.manifest = read_manifest(path)
        self.classes = list(self.manifest["classes"])
        self.split = _pick_split(list(self.manifest["splits"]), split, str(path))
        self.label_kind = self.manifest.get("label_kind", "single")
        self.fingerprint = self.manifest["fingerprint"]

    def _samples(self) -> Iterator[tuple[Entry, bytes]]:
        from pipeline.shards.reader import iter_samples

        for s in iter_samples(self.path, self.split):
            meta = s["json"] or {}
            yield Entry(s["__key__"], s["cls"], meta.get("labels"), meta.get("boxes")), s["jpg"]

    def __len__(self) -> int:
        return int(self.manifest["splits"][self.split]["count"])

    def __iter__(self) -> Iterator[Sample]:
        for e, data in self._samples():
            yield Sample(e.key, e.label, e.labels, e.boxes, *_decoded(data))

    def entries(self) -> list[Entry]:
        return [e for e, _ in self._samples()]

    def decode(self, rows: Iterable[int]) -> Iterator[Item]:
        want = {int(r) for r in rows}
        for row, (e, data) in enumerate(islice(self._samples(), max(want, default=-1) + 1)):  # one pass, in order
            if row in want:
                yield Item(e.key, e.label, e.labels, e.boxes, *_decoded(data), row=row)


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
            skip = r.extras.get("skip")  # found by the reader but not usable (e.g. no label)
            img, err = (None, str(skip)) if skip else _read_decoded(r)
            yield Sample(r.key, r.label, r.labels, r.boxes, img, err)

    def entries(self) -> list[Entry]:
        return [Entry(r.key, r.label, r.labels, r.boxes) for r in self._records]

    def decode(self, rows: Iterable[int]) -> Iterator[Item]:
        for row in sorted({int(r) for r in rows}):  # records are read directly, by position
            r = self._records[row]
            yield Item(r.key, r.label, r.labels, r.boxes, *_read_decoded(r), row=row)


def open_data(path: str | os.PathLike[str], split: str | None = None, format: str = "auto", **options: Any) -> DataView:
    """A shard folder (with ``manifest.json``) or a source dataset (``format``: its layout, ``auto`` detects;
    ``options``: reader options, e.g. ``devkit=``); ``split`` by default the only one, else ``val``, else ``test``.
    """
    p = Path(path)
    if not p.exists():
        raise UserError(f"not found: {p}")
    from pipeline.shards.reader import is_shard_dir

    if p.is_dir() and is_shard_dir(p):
        return ShardView(p, split)
    return SourceView(p, split, format, **options)
