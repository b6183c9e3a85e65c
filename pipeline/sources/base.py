"""Records and sources: how every stage reads an image collection laid out as users have it (docs/formats.md).

Readers register themselves with :func:`register_source`; :func:`open_source` picks one by name or
detects the layout (``format="auto"``). Class index = position in the sorted class names.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import UserError

__all__ = ["Record", "Source", "register_source", "open_source", "SOURCES", "class_dirs", "plain_files", "is_hidden"]


@dataclass
class Record:
    """One image of a source, yielded in a stable source order.

    ``key``: unique within the source, safe as a tar member stem; ``label``: class index, None for
    multi-label sources and unlabelled images; ``path``, or ``data`` (the bytes, kept in memory) when
    there is no file; ``labels``: VOC-style per-class 1 / -1 / 0; ``boxes``: ``xmin, ymin, xmax, ymax``
    (source pixels), ``name``, optional ``difficult`` and ``label``; ``extras``: wnid, class name, ...;
    ``span``: (offset, size) of the bytes inside the file ``path`` (a tar member, read in place).
    """

    key: str
    label: int | None = None
    path: Path | None = None
    data: bytes | None = None
    labels: list[int] | None = None
    boxes: list[dict[str, Any]] | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    span: tuple[int, int] | None = None

    def read_bytes(self) -> bytes:
        if self.data is not None:
            return self.data
        if self.path is None:
            raise OSError(f"record {self.key} has neither bytes nor a path")
        if self.span is None:
            return Path(self.path).read_bytes()
        off, size = self.span
        with open(self.path, "rb") as fh:
            fh.seek(off)
            data = fh.read(size)
        if len(data) != size:
            raise OSError(f"truncated tar member ({len(data)} of {size} bytes)")
        return data


class Source(ABC):
    """Base of the readers: ``classes`` (sorted names or wnids), ``splits()`` and ``records(split)``.

    Subclasses fill ``_classes`` and ``_splits``; ``detect`` tells a layout (lowest ``detect_priority`` first).
    """

    kind: str = "source"
    detect_priority = 50
    _classes: list[str]
    _splits: list[str] | dict[str, Path]

    def __init__(self, root: str | os.PathLike[str], **options: Any) -> None:
        self.root = Path(root)
        if not self.root.exists():
            raise UserError(f"source not found: {self.root}")

    @classmethod
    def detect(cls, root: Path) -> bool:
        return False

    @property
    def classes(self) -> list[str]:
        return list(self._classes)

    def splits(self) -> list[str]:
        return list(self._splits)

    def _check_split(self, split: str, where: Path, what: str = "split") -> None:
        if split not in self.splits():
            raise UserError(f"{where}: no {what} {split!r} (has {', '.join(self.splits()) or 'none'})")

    @abstractmethod
    def records(self, split: str) -> Iterator[Record]:
        """Records of one split in stable source order."""


SOURCES: dict[str, type[Source]] = {}


def register_source(name: str) -> Callable[[type[Source]], type[Source]]:
    """Class decorator registering a reader under ``name`` (the ``--format`` value)."""

    def deco(cls: type[Source]) -> type[Source]:
        cls.kind = name
        SOURCES[name] = cls
        return cls

    return deco


def open_source(root: str | os.PathLike[str], format: str = "auto", **options: Any) -> Source:
    """Open a dataset on disk with the reader ``format``, or detect the layout when ``auto``."""
    import pipeline.sources  # noqa: F401 - registers every reader

    p = Path(root)
    if not p.exists():
        raise UserError(f"source not found: {p}")
    if format != "auto":
        if format not in SOURCES:
            raise UserError(f"unknown format {format!r} (one of: auto, {', '.join(sorted(SOURCES))})")
        return SOURCES[format](p, **options)
    # Most specific layouts first; ImageFolder (any folder of class folders) last.
    for cls in sorted(SOURCES.values(), key=lambda c: c.detect_priority):
        if cls.detect(p):
            return cls(p, **options)
    raise UserError(f"{p}: cannot detect the dataset layout; pass --format ({', '.join(sorted(SOURCES))})")


def class_dirs(d: Path) -> list[Path]:
    """The class folders of ``d``: its folders not starting with a dot, sorted by name."""
    return sorted((p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def plain_files(d: Path) -> list[Path]:
    """The files of ``d`` (not folders) not starting with a dot, sorted."""
    return [p for p in sorted(d.iterdir()) if not p.name.startswith(".") and not p.is_dir()]


def is_hidden(path: Path, root: Path) -> bool:
    """True if any component of ``path`` below ``root`` starts with a dot."""
    return any(part.startswith(".") for part in path.relative_to(root).parts)
