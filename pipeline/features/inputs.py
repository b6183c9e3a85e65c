"""The images to describe (paper Appendix B): any dataset :func:`pipeline.data.open_data` reads.

Extraction needs the ids and labels of every image before it writes the store (they are written
once, with the store, so the resumable part of the file only ever changes raw data), and then the
decoded images of the rows still to do. :class:`ExtractInput` lists a shard folder or a source
without decoding anything, and decodes only the rows asked for, in source order. An image that
cannot be decoded comes back with its reason, to be recorded in the store.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from PIL import Image

from pipeline.data import DataView, ShardView, SourceView, open_data
from pipeline.errors import UserError
from pipeline.images import ImageError, decode_rgb

__all__ = ["Entry", "Item", "ExtractInput"]


@dataclass
class Entry:
    """What the store needs to know about an image before describing it."""

    key: str
    label: int | None
    labels: list[int] | None
    boxes: list[dict[str, Any]] | None


@dataclass
class Item:
    """A decoded image (or the reason it could not be decoded) for one row."""

    row: int
    key: str
    image: Image.Image | None
    error: str | None
    boxes: list[dict[str, Any]] | None


def _decode(data: bytes) -> tuple[Image.Image | None, str | None]:
    try:
        return decode_rgb(data), None
    except ImageError as e:
        return None, str(e)


class ExtractInput:
    """One split of a dataset: ``classes``, ``kind``, ``split``, ``fingerprint``, ``label_kind``, ``entries``.

    Args:
        path: a shard folder or a source dataset.
        split: the split (default as :func:`open_data`: the only split, else val, else test).
        format: the source layout (``auto`` detects).
    """

    def __init__(self, path: str | os.PathLike[str], split: str | None = None, format: str = "auto") -> None:
        self.view: DataView = open_data(path, split, format)
        self.classes: list[str] = list(self.view.classes)
        self.kind: str = self.view.kind
        self.split: str = self.view.split
        self.label_kind: str = getattr(self.view, "label_kind", "single") or "single"
        self._records: list[Any] | None = None
        self.entries: list[Entry] = self._list()
        if any(e.labels is not None for e in self.entries):
            self.label_kind = "multi"

    @property
    def fingerprint(self) -> str:
        return str(self.view.fingerprint)

    def __len__(self) -> int:
        return len(self.entries)

    def _list(self) -> list[Entry]:
        if isinstance(self.view, SourceView):
            self._records = list(self.view.source.records(self.view.split))
            return [Entry(r.key, r.label, r.labels, r.boxes) for r in self._records]
        if isinstance(self.view, ShardView):
            from pipeline.shards.reader import iter_samples

            out = []
            for s in iter_samples(self.view.path, self.view.split):
                meta = s["json"] or {}
                out.append(Entry(s["__key__"], s["cls"], meta.get("labels"), meta.get("boxes")))
            return out
        return [Entry(s.key, s.label, s.labels, s.boxes) for s in self.view]  # any other DataView

    def items(self, rows: Iterable[int]) -> Iterator[Item]:
        """Decoded images of ``rows`` (increasing), in that order."""
        wanted = sorted(set(int(r) for r in rows))
        if not wanted:
            return
        if self._records is not None:
            for r in wanted:
                rec = self._records[r]
                try:
                    img, err = _decode(rec.read_bytes())
                except OSError as e:
                    img, err = None, f"unreadable: {e.strerror or e}"
                yield Item(r, rec.key, img, err, rec.boxes)
            return
        want = set(wanted)
        last = wanted[-1]
        if isinstance(self.view, ShardView):
            from pipeline.shards.reader import iter_samples

            source: Iterator[Any] = iter_samples(self.view.path, self.view.split)
        else:
            source = iter(self.view)
        for row, s in enumerate(source):
            if row > last:
                break
            if row not in want:
                continue
            if isinstance(s, dict):
                key, boxes = s["__key__"], (s["json"] or {}).get("boxes")
                img, err = _decode(s["jpg"])
            else:
                key, boxes, img, err = s.key, s.boxes, s.image, s.error
            if key != self.entries[row].key:
                raise UserError(f"{self.view.split}: the data changed while reading (row {row}: {key!r}, "
                                f"expected {self.entries[row].key!r})")
            yield Item(row, key, img, err, boxes)

    def describe(self) -> dict[str, Any]:
        """Provenance of the data: kind, split, fingerprint, counts, classes."""
        return {"kind": self.kind, "split": self.split, "fingerprint": self.fingerprint,
                "count": len(self.entries), "classes": len(self.classes), "label_kind": self.label_kind}
