"""The shard folder's ``manifest.json`` (docs/formats.md section 6) and the fingerprints that guard it.

The manifest records the source kind, root and fingerprint, the classes, counts per split and
class, every shard with its sample count, bytes and sha256, the resolved config, the skip summary
and (after ``vgg stats``) the dataset statistics. It is written last and atomically.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipeline.io import fingerprint
from pipeline.sources.base import Record

__all__ = ["FORMAT", "MANIFEST", "SKIPPED", "record_item", "source_fingerprint", "dataset_fingerprint"]

FORMAT = "vgg-shards/1"
MANIFEST = "manifest.json"
SKIPPED = "skipped.jsonl"


def _stat(path: Path | None) -> tuple[int, int] | None:
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def record_item(rec: Record, root: Path) -> list[Any]:
    """What a record contributes to the source fingerprint: key, labels, boxes, file size and mtime."""
    rel = None
    if rec.path is not None:
        try:
            rel = str(Path(rec.path).relative_to(root))
        except ValueError:
            rel = str(rec.path)
    span = getattr(rec, "span", None)
    data = (len(rec.data), hashlib.sha256(rec.data).hexdigest()[:16]) if rec.data is not None else None
    return [rec.key, rec.label, rec.labels, rec.boxes, rel, _stat(rec.path), span, data]


def source_fingerprint(kind: str, classes: list[str], splits: dict[str, Iterable[Record]], root: Path) -> str:
    """Fingerprint of a source: its kind, classes and every record (key, labels, boxes, size, mtime)."""

    def items():
        yield [kind, classes]
        for name, recs in splits.items():
            yield ["split", name]
            for r in recs:
                yield record_item(r, root)

    return fingerprint(items())


def dataset_fingerprint(source_fp: str, content: dict[str, Any]) -> str:
    """Fingerprint of a shard folder: the source fingerprint plus the config fields that shape samples."""
    return fingerprint([FORMAT, source_fp, content])
