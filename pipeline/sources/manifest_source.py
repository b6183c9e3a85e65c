"""A CSV or JSONL list of images, for any collection the folder layouts do not cover (the columns and
the errors: docs/formats.md, "Two generic layouts")."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.sources.base import Record, Source, register_source

__all__ = ["ManifestSource"]

SUFFIXES = (".csv", ".jsonl")
_FIELDS = ("path", "label", "labels", "boxes", "key", "split", "__line__")  # not copied into extras


def _rows(path: Path) -> list[dict[str, Any]]:
    """Rows with their line number under ``"__line__"`` (CSV: ``labels`` split on ``;``, ``boxes`` parsed)."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
                        "save it as UTF-8") from None
    if path.suffix == ".jsonl":
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{n}: not JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise UserError(f"{path}:{n}: expected a JSON object per line")
            rows.append({**row, "__line__": n})
        return rows
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = [{**row, "__line__": reader.line_num} for row in reader]
    for row in rows:
        if row.get("labels"):
            row["labels"] = [x.strip() for x in row["labels"].split(";") if x.strip()]
        if row.get("boxes"):
            try:
                row["boxes"] = json.loads(row["boxes"])
            except json.JSONDecodeError as e:
                raise UserError(f"{path}: bad boxes JSON for {row.get('path')!r} ({e.msg})") from None
        for k in [k for k, v in row.items() if v in ("", None)]:
            del row[k]
    return rows


def _check_row(path: Path, r: dict[str, Any]) -> None:
    """Types of a row's fields (one line naming the list's line)."""
    where = f"{path}:{r['__line__']}"
    if "path" not in r:
        raise UserError(f"{where}: row has no 'path'")
    if not isinstance(r["path"], str) or not r["path"].strip():
        raise UserError(f"{where}: 'path' must be a non-empty string, got {r['path']!r}")
    if "label" in r and (isinstance(r["label"], bool) or not isinstance(r["label"], (str, int))):
        raise UserError(f"{where}: 'label' must be a class name (string or integer), got {r['label']!r}")
    v = r.get("labels")
    if v is not None:
        names = list(v) if isinstance(v, (list, dict)) else [v]
        if any(isinstance(x, bool) or not isinstance(x, (str, int)) for x in names):
            raise UserError(f"{where}: 'labels' must name classes (strings or integers), got {v!r}")
        if isinstance(v, dict) and any(x not in (1, 0, -1) or isinstance(x, bool) for x in v.values()):
            raise UserError(f"{where}: 'labels' mapping values must be 1, 0 or -1, got {v!r}")
    if "key" in r and not isinstance(r["key"], (str, int)):
        raise UserError(f"{where}: 'key' must be a string, got {r['key']!r}")


@register_source("manifest")
class ManifestSource(Source):
    """Images listed in a ``.csv`` or ``.jsonl`` file."""

    detect_priority = 10

    @classmethod
    def detect(cls, root: Path) -> bool:
        return root.is_file() and root.suffix in SUFFIXES

    def __init__(self, root, **options) -> None:
        super().__init__(root, **options)
        if not self.detect(self.root):
            raise UserError(f"{self.root}: a manifest is a .csv or .jsonl file")
        self.rows = _rows(self.root)
        if not self.rows:
            raise UserError(f"{self.root}: no rows")
        names: set[str] = set()
        multi = False
        for r in self.rows:
            _check_row(self.root, r)
            if "labels" in r:
                multi = True
                names.update(str(x) for x in (r["labels"] if isinstance(r["labels"], (list, dict)) else [r["labels"]]))
            if "label" in r:
                names.add(str(r["label"]))
        self.label_kind = "multi" if multi else "single"
        self.labelled = bool(names)
        numeric = names and all(re.fullmatch(r"-?\d+", n) for n in names)
        self._classes = sorted(names, key=int if numeric else None)
        self._index = {c: i for i, c in enumerate(self._classes)}
        self._splits = list(dict.fromkeys(str(r.get("split", "all")) for r in self.rows))

    def _labels(self, v: Any) -> list[int]:
        if isinstance(v, dict):
            return [int(v.get(c, -1)) for c in self._classes]
        present = {str(x) for x in (v if isinstance(v, list) else [v])}
        return [1 if c in present else -1 for c in self._classes]

    def records(self, split: str) -> Iterator[Record]:
        self._check_split(split, self.root)
        base = self.root.parent
        for r in self.rows:
            if str(r.get("split", "all")) != split:
                continue
            p = Path(r["path"])
            path = p if p.is_absolute() else base / p
            key = str(r.get("key") or "__".join(Path(r["path"]).with_suffix("").parts).replace(".", "_"))
            extras = {k: v for k, v in r.items() if k not in _FIELDS}
            extras["source_path"] = str(path)
            if self.labelled and ("labels" if self.label_kind == "multi" else "label") not in r:
                extras["skip"] = f"no label (line {r['__line__']} of {self.root.name})"
            label = self._index[str(r["label"])] if "label" in r and self.label_kind == "single" else None
            if "label" in r:
                extras["class_name"] = str(r["label"])
            labels = self._labels(r["labels"]) if self.label_kind == "multi" and "labels" in r else None
            yield Record(key=key, label=label, path=path, labels=labels, boxes=r.get("boxes"), extras=extras)
