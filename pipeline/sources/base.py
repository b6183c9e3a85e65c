"""Records and sources: how every stage reads an image collection laid out as users have it.

A *source* is a dataset on disk in one of the real layouts (ImageFolder, ILSVRC-2012, PASCAL VOC,
Caltech-101/256, a CSV/JSONL manifest). It lists its classes (sorted names = class indices, as
torchvision and docs/formats.md) and yields :class:`Record` objects per split, in a stable source order.
Readers register themselves with :func:`register_source`; :func:`open_source` picks one by name
or detects the layout (``format="auto"``).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import UserError

__all__ = ["Record", "Source", "register_source", "open_source", "SOURCES", "class_dirs", "is_hidden"]


@dataclass
class Record:
    """One image of a source.

    Attributes:
        key: stable id from the source (unique within the source, safe as a tar member stem).
        label: class index, or None for multi-label sources (VOC) and unlabelled images.
        path: the image file, or None when the bytes come from elsewhere (tar member).
        data: the image bytes when there is no path (read in memory, never written to disk).
        labels: VOC-style per-class labels (1 present, -1 absent, 0 difficult only), or None.
        boxes: objects with ``xmin, ymin, xmax, ymax`` (source pixels), ``name``, optional
            ``difficult`` and ``label``; or None when the source has no boxes.
        extras: anything else worth recording (wnid, class name, source path, ...).
    """

    key: str
    label: int | None = None
    path: Path | None = None
    data: bytes | None = None
    labels: list[int] | None = None
    boxes: list[dict[str, Any]] | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def read_bytes(self) -> bytes:
        """The image file's bytes (from memory or disk)."""
        if self.data is not None:
            return self.data
        if self.path is None:
            raise OSError(f"record {self.key} has neither bytes nor a path")
        return Path(self.path).read_bytes()


class Source(ABC):
    """Base of the readers. Subclasses set ``kind`` and implement the methods below."""

    kind: str = "source"

    def __init__(self, root: str | os.PathLike[str], **options: Any) -> None:
        self.root = Path(root)
        self.options = options
        if not self.root.exists():
            raise UserError(f"source not found: {self.root}")

    @classmethod
    def detect(cls, root: Path) -> bool:
        """True if ``root`` looks like this layout."""
        return False

    @property
    @abstractmethod
    def classes(self) -> list[str]:
        """Class names; class index = position in this list (sorted names/wnids)."""

    @abstractmethod
    def splits(self) -> list[str]:
        """Splits this source has (e.g. train, val)."""

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
    for _name, cls in sorted(SOURCES.items(), key=lambda kv: getattr(kv[1], "detect_priority", 50)):
        if cls.detect(p):
            return cls(p, **options)
    raise UserError(f"{p}: cannot detect the dataset layout; pass --format ({', '.join(sorted(SOURCES))})")


def class_dirs(d: Path) -> list[Path]:
    """The class folders of ``d``: its folders not starting with a dot, sorted by name."""
    return sorted((p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def is_hidden(path: Path, root: Path) -> bool:
    """True if any component of ``path`` below ``root`` starts with a dot."""
    return any(part.startswith(".") for part in path.relative_to(root).parts)
