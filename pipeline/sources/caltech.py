"""Caltech-101 and Caltech-256 layouts (docs/formats.md section 3; paper App. B): every class folder kept
(``BACKGROUND_Google``, ``257.clutter``), ``*.jpg`` files only, one split ``all``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import UserError
from pipeline.sources.base import Record, Source, class_dirs, plain_files, register_source

__all__ = ["Caltech101Source", "Caltech256Source"]

_C256_DIR = re.compile(r"^\d{3}\.[^/]+$")


class _Caltech(Source):
    folder = ""
    detect_priority = 30
    _splits = ["all"]

    def __init__(self, root, **options) -> None:
        super().__init__(root, **options)
        d = self._find(self.root)
        if d is None:
            raise UserError(f"{self.root}: no {self.folder} folder")
        self.dir = d
        self._dirs = class_dirs(d)
        self._classes = [p.name for p in self._dirs]

    @classmethod
    def _find(cls, root: Path) -> Path | None:
        """The ``folder`` (``root`` itself, or in it), else ``root`` if it looks like one."""
        for d in (root, root / cls.folder):
            if d.name == cls.folder and d.is_dir():
                return d
        return root if cls._looks_like(root) else None

    @classmethod
    def _looks_like(cls, d: Path) -> bool:
        return False

    @classmethod
    def detect(cls, root: Path) -> bool:
        return root.is_dir() and cls._find(root) is not None

    def _key(self, cdir: Path, f: Path) -> str:
        return f"{cdir.name}__{f.stem}".replace(".", "_")

    def records(self, split: str) -> Iterator[Record]:
        self._check_split(split, self.dir)
        for i, cdir in enumerate(self._dirs):
            for f in plain_files(cdir):
                if f.suffix.lower() == ".jpg":
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
    """``256_ObjectCategories/NNN.name/NNN_XXXX.jpg``: 257 classes incl. 257.clutter."""

    folder = "256_ObjectCategories"

    @classmethod
    def _looks_like(cls, d: Path) -> bool:
        names = [p.name for p in class_dirs(d)] if d.is_dir() else []
        return bool(names) and all(map(_C256_DIR.match, names)) and any(n.endswith(".clutter") for n in names)

    def _key(self, cdir: Path, f: Path) -> str:
        return f.stem.replace(".", "_")

    def records(self, split: str) -> Iterator[Record]:
        for r in super().records(split):
            r.extras["class_label"] = r.extras["class_name"].split(".", 1)[1]
            yield r
