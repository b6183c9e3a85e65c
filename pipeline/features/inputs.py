"""The images to describe (paper Appendix B): any dataset :func:`pipeline.data.open_data` reads.

Extraction needs the ids and labels of every image before it writes the store (they are written
once, with the store, so the resumable part of the file only ever changes raw data), and then the
decoded images of the rows still to do. :class:`ExtractInput` lists any data view (``entries()``)
without decoding anything, and decodes only the rows asked for (``decode()``), in source order. An image that
cannot be decoded comes back with its reason, to be recorded in the store.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

from pipeline.data import DataView, Entry, Item, open_data
from pipeline.errors import UserError

__all__ = ["Entry", "Item", "ExtractInput"]


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
        self.entries: list[Entry] = self.view.entries()
        if any(e.labels is not None for e in self.entries):
            self.label_kind = "multi"

    @property
    def fingerprint(self) -> str:
        return str(self.view.fingerprint)

    def __len__(self) -> int:
        return len(self.entries)

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
