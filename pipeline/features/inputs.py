"""The images to describe (paper Appendix B): one split of any dataset :func:`pipeline.data.open_data` reads.

:class:`ExtractInput` lists the ids and labels of every image without decoding (they are written
with the store, once), then decodes only the rows asked for, in source order. An image that cannot
be decoded comes back with its reason, to be recorded in the store.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from pipeline.data import DataView, Entry, Item, open_data
from pipeline.errors import UserError

__all__ = ["Entry", "Item", "ExtractInput"]


class ExtractInput:
    """One split (default as :func:`open_data`) of a shard folder or source dataset (``format``: its layout).

    Attributes: ``classes``, ``kind``, ``split``, ``fingerprint``, ``label_kind``, ``entries``.
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
