"""A shard folder's ``manifest.json`` (docs/formats.md section 6), the fingerprints that guard it, and reading a
split's shards with the count and size their entries record (the input of paper 3.1-3.2)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.io import fingerprint, read_json
from pipeline.shards.tarstream import ShardError, read_shard
from pipeline.sources.base import Record

__all__ = ["FORMAT", "MANIFEST", "SKIPPED", "source_fingerprint", "dataset_fingerprint", "read_manifest",
           "split_shards", "shard_paths", "shard_items", "iter_samples", "decode_fields", "is_shard_dir"]

FORMAT = "vgg-shards/1"
MANIFEST = "manifest.json"
SKIPPED = "skipped.jsonl"

#: A shard file name: one plain file in the shard folder (no separators, no "..", not hidden).
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\.tar")


def _record_item(rec: Record, root: Path) -> list[Any]:
    """What a record contributes to the source fingerprint: key, labels, boxes, file size and mtime."""
    rel = st = None
    if rec.path is not None:
        try:
            rel = str(Path(rec.path).relative_to(root))
        except ValueError:
            rel = str(rec.path)
        try:
            s = os.stat(rec.path)
            st = s.st_size, s.st_mtime_ns
        except OSError:
            pass
    data = (len(rec.data), hashlib.sha256(rec.data).hexdigest()[:16]) if rec.data is not None else None
    return [rec.key, rec.label, rec.labels, rec.boxes, rel, st, getattr(rec, "span", None), data]


def source_fingerprint(kind: str, classes: list[str], splits: dict[str, Iterable[Record]], root: Path) -> str:
    """Fingerprint of a source: its kind, classes and every record (key, labels, boxes, size, mtime)."""

    def items():
        yield [kind, classes]
        for name, recs in splits.items():
            yield ["split", name]
            for r in recs:
                yield _record_item(r, root)

    return fingerprint(items())


def dataset_fingerprint(source_fp: str, content: dict[str, Any]) -> str:
    """Fingerprint of a shard folder: the source fingerprint plus the config fields that shape samples."""
    return fingerprint([FORMAT, source_fp, content])


def is_shard_dir(path: str | os.PathLike[str]) -> bool:
    """True if ``path`` is a folder holding a shard ``manifest.json``."""
    return (Path(path) / MANIFEST).is_file()


def _check(m: Any, p: Path) -> None:
    """The manifest's structure: splits of shards, each with a safe name, a count and a size."""
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        got = m.get("format") if isinstance(m, dict) else type(m).__name__
        raise UserError(f"{p}: format {got!r}, expected {FORMAT!r}")
    if not isinstance(m.get("splits"), dict) or not isinstance(m.get("classes"), list):
        raise UserError(f"{p}: no 'splits' mapping or 'classes' list (damaged manifest)")
    for split, sp in m["splits"].items():
        shards = sp.get("shards") if isinstance(sp, dict) else None
        if not isinstance(shards, list) or not isinstance(sp.get("count"), int):
            raise UserError(f"{p}: split {split!r} has no 'shards' list or 'count' (damaged manifest)")
        for s in shards:
            if not isinstance(s, dict):
                raise UserError(f"{p}: split {split!r}: a shard entry is not an object")
            if not isinstance(name := s.get("name"), str) or not _NAME_RE.fullmatch(name) or ".." in name:
                raise UserError(f"{p}: shard name {name!r} is not a plain .tar file name in the shard folder")
            for k in ("count", "bytes"):
                if not isinstance(s.get(k), int) or isinstance(s.get(k), bool) or s[k] < 0:
                    raise UserError(f"{p}: shard {s['name']}: {k!r} is not a count (damaged manifest)")
        if sum(s["count"] for s in shards) != sp["count"]:
            raise UserError(f"{p}: split {split!r}: its shards hold {sum(s['count'] for s in shards)} samples, "
                            f"the split says {sp['count']} (damaged manifest)")


def read_manifest(shard_dir: str | os.PathLike[str], name: str = MANIFEST) -> dict[str, Any]:
    """The manifest of a finished shard folder (or a part's record ``name``), its structure and shard names checked
    (a missing, non-JSON, other-format or damaged one is a UserError)."""
    p = Path(shard_dir) / name
    if not p.is_file():
        raise UserError(f"{shard_dir}: no {name} (not a shard folder, or `vgg shard` has not finished)")
    try:
        m = read_json(p)
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{p}: not valid JSON ({str(e).splitlines()[0]})") from None
    _check(m, p)
    return m


def split_shards(m: dict[str, Any], shard_dir: str | os.PathLike[str], split: str) -> list[dict[str, Any]]:
    """The manifest entries of the shards of ``split`` (an unknown split is a UserError)."""
    if split not in m["splits"]:
        raise UserError(f"{shard_dir}: no split {split!r} (has {', '.join(m['splits']) or 'none'})")
    return m["splits"][split]["shards"]


def shard_items(shard_dir: str | os.PathLike[str], split: str,
                manifest: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The shards of ``split`` in manifest order as reader items ``{"url", "count", "bytes"}`` (an unknown split or
    a listed shard file missing is a UserError)."""
    m = manifest if manifest is not None else read_manifest(shard_dir)
    base = Path(shard_dir).resolve()
    items = [{"url": str(base / s["name"]), "count": s["count"], "bytes": s["bytes"]}
             for s in split_shards(m, shard_dir, split)]
    for it in items:
        if not os.path.isfile(it["url"]):
            raise ShardError(f"{it['url']}: shard listed in the manifest is missing")
    return items


def shard_paths(shard_dir: str | os.PathLike[str], split: str) -> list[str]:
    """Absolute paths of the shards of ``split``, in manifest order (each checked to exist)."""
    return [it["url"] for it in shard_items(shard_dir, split)]


def iter_samples(shard_dir: str | os.PathLike[str], split: str) -> Iterator[dict[str, Any]]:
    """Raw samples of a split in shard order: ``{"__key__", "jpg": bytes, "cls": int | None, "json": dict}``."""
    for it in shard_items(shard_dir, split):
        for s in read_shard(it["url"], it["count"], it["bytes"]):
            yield decode_fields(s)


def decode_fields(s: dict[str, Any]) -> dict[str, Any]:
    """A raw tar sample's ``cls`` as int and ``json`` as dict (a malformed one is a ShardError naming the key)."""
    if s.get("jpg") is None:
        raise ShardError(f"{s['__url__']}: sample {s['__key__']!r} has no .jpg file")
    try:
        cls = s.get("cls")
        return {"__key__": s["__key__"], "jpg": s["jpg"], "cls": int(cls) if cls is not None else None,
                "json": json.loads(s["json"]) if "json" in s else {}}
    except (ValueError, UnicodeDecodeError) as e:
        raise ShardError(f"{s['__url__']}: sample {s['__key__']!r}: malformed .cls or .json ({e})") from None
