"""Reading a shard folder: its manifest, the shard paths of a split, and its samples.

The training stage builds its own webdataset pipeline from :func:`shard_paths`; evaluation and
extraction go through :func:`pipeline.data.open_data`, which uses :func:`iter_samples`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.io import read_json
from pipeline.shards.manifest import FORMAT, MANIFEST

__all__ = ["read_manifest", "shard_paths", "iter_samples", "is_shard_dir"]


def is_shard_dir(path: str | os.PathLike[str]) -> bool:
    """True if ``path`` is a folder holding a shard ``manifest.json``."""
    return (Path(path) / MANIFEST).is_file()


def read_manifest(shard_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a finished shard folder.

    Raises:
        UserError: no manifest (not a shard folder, or the shard run has not finished) or a
            manifest of another format.
    """
    p = Path(shard_dir) / MANIFEST
    if not p.is_file():
        raise UserError(f"{shard_dir}: no {MANIFEST} (not a shard folder, or `vgg shard` has not finished)")
    m = read_json(p)
    if m.get("format") != FORMAT:
        raise UserError(f"{p}: format {m.get('format')!r}, expected {FORMAT!r}")
    return m


def shard_paths(shard_dir: str | os.PathLike[str], split: str) -> list[str]:
    """Absolute paths of the shards of ``split``, in manifest order.

    Raises:
        UserError: unknown split, or a listed shard file missing.
    """
    m = read_manifest(shard_dir)
    if split not in m["splits"]:
        raise UserError(f"{shard_dir}: no split {split!r} (has {', '.join(m['splits']) or 'none'})")
    base = Path(shard_dir).resolve()
    paths = [str(base / s["name"]) for s in m["splits"][split]["shards"]]
    for p in paths:
        if not os.path.isfile(p):
            raise UserError(f"{p}: shard listed in the manifest is missing")
    return paths


def iter_samples(shard_dir: str | os.PathLike[str], split: str) -> Iterator[dict[str, Any]]:
    """Raw samples of a split in shard order: ``{"__key__", "jpg": bytes, "cls": int | None, "json": dict}``."""
    import webdataset as wds

    paths = shard_paths(shard_dir, split)
    if not paths:
        return
    ds = wds.WebDataset(paths, shardshuffle=False, empty_check=False, nodesplitter=None, workersplitter=None)
    for s in ds:
        cls = s.get("cls")
        yield {"__key__": s["__key__"], "jpg": s["jpg"], "cls": int(cls) if cls is not None else None,
               "json": json.loads(s["json"]) if "json" in s else {}}
