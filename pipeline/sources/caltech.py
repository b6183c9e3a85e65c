"""Caltech-101 and Caltech-256 layouts (docs/formats.md section 3; paper App. B, "Caltech image classification").

The paper uses all 102 Caltech-101 classes ("101 object categories and a background class", so
``BACKGROUND_Google`` is kept, and ``Faces`` / ``Faces_easy`` stay separate) and all 257
Caltech-256 classes (``257.clutter`` included). Only ``*.jpg`` files are images: stray entries such
as ``056.dog/greg`` (a folder) and ``198.spider/RENAME2`` are not listed. One split, ``all``; the
random train/test splits of the transfer protocol are drawn by the transfer stage.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import UserError
from pipeline.sources.base import Record, Source, class_dirs, register_source

__all__ = ["Caltech101Source", "Caltech256Source"]

_C256_DIR = re.compile(r"^\d{3}\.[^/]+$")


def _find(root: Path, name: str) -> Path | None:
    if root.name == name and root.is_dir():
        return root
    if (root / name).is_dir():
        return root / name
    return None


def _jpgs(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if not p.name.startswith(".") and p.suffix.lower() == ".jpg"
                  and not p.is_dir())


class _Caltech(Source):
    folder = ""
    detect_priority = 30

    def __init__(self, root, **options) -> None:
        super().__init__(root, **options)
        d = _find(self.root, self.folder) or (self.root if self._looks_like(self.root) else None)
        if d is None:
            raise UserError(f"{self.root}: no {self.folder} folder")
        self.dir = d
        self._dirs = class_dirs(d)
        self._classes = [p.name for p in self._dirs]

    @classmethod
    def _looks_like(cls, d: Path) -> bool:
        return False

    @classmethod
    def detect(cls, root: Path) -> bool:
        return root.is_dir() and (_find(root, cls.folder) is not None or cls._looks_like(root))

    @property
    def classes(self) -> list[str]:
        return self._classes

    def splits(self) -> list[str]:
        return ["all"]

    def _key(self, cdir: Path, f: Path) -> str:
        return f"{cdir.name}__{f.stem}".replace(".", "_")

    def records(self, split: str) -> Iterator[Record]:
        if split != "all":
            raise UserError(f"{self.dir}: no split {split!r} (has all)")
        for i, cdir in enumerate(self._dirs):
            for f in _jpgs(cdir):
                yield Record(key=self._key(cdir, f), label=i, path=f,
                             extras={"class_name": cdir.name, "source_path": str(f)})


@register_source("caltech101")
class Caltech101Source(_Caltech):
    """``101_ObjectCategories/<Category>/image_NNNN.jpg``: 102 classes incl. BACKGROUND_Google."""

    folder = "101_ObjectCategories"

    @classmethod
    def _looks_like(cls, d: Path) -> bool:
        return (d / "BACKGROUND_Google").is_dir() and (d / "Faces_easy").is_dir()


@register_source("caltech256")
class Caltech256Source(_Caltech):
    """``256_ObjectCategories/NNN.name/NNN_XXXX.jpg``: 257 classes incl. 257.clutter; ``*.jpg`` only."""

    folder = "256_ObjectCategories"

    @classmethod
    def _looks_like(cls, d: Path) -> bool:
        dirs = class_dirs(d) if d.is_dir() else []
        return (
            bool(dirs) and all(_C256_DIR.match(p.name) for p in dirs) and any(p.name.endswith(".clutter") for p in dirs)
        )

    def _key(self, cdir: Path, f: Path) -> str:
        return f.stem.replace(".", "_")

    def records(self, split: str) -> Iterator[Record]:
        for r in super().records(split):
            r.extras["class_label"] = r.extras["class_name"].split(".", 1)[1]
            yield r
