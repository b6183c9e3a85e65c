"""ImageFolder layout: ``<root>/<split>/<class>/<file>`` or ``<root>/<class>/<file>``.

Class index = rank of the sorted class folder names (torchvision's ImageFolder). Hidden files and
folders are ignored. Files are not filtered by extension here: decoding is by content, and files
that are not images are recorded as skips by the stage that decodes them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import UserError
from pipeline.sources.base import Record, Source, class_dirs, is_hidden, register_source

__all__ = ["ImageFolderSource"]

SPLIT_NAMES = ("train", "val", "test", "trainval")


@register_source("imagefolder")
class ImageFolderSource(Source):
    """``root/{train,val}/<class>/*`` (split folders) or ``root/<class>/*`` (one split, ``all``)."""

    detect_priority = 90

    @classmethod
    def detect(cls, root: Path) -> bool:
        return root.is_dir() and bool(class_dirs(root))

    def __init__(self, root, **options) -> None:
        super().__init__(root, **options)
        top = class_dirs(self.root)
        if not top:
            raise UserError(f"{self.root}: no class folders")
        split_dirs = [p for p in top if p.name in SPLIT_NAMES]
        if split_dirs and len(split_dirs) == len(top):
            self._splits = {p.name: p for p in split_dirs}
        else:
            self._splits = {"all": self.root}
        names: set[str] = set()
        for d in self._splits.values():
            names.update(p.name for p in class_dirs(d))
        self._classes = sorted(names)
        self._index = {c: i for i, c in enumerate(self._classes)}

    @property
    def classes(self) -> list[str]:
        return self._classes

    def splits(self) -> list[str]:
        return list(self._splits)

    def records(self, split: str) -> Iterator[Record]:
        if split not in self._splits:
            raise UserError(f"{self.root}: no split {split!r} (has {', '.join(self._splits)})")
        base = self._splits[split]
        for cdir in class_dirs(base):
            for f in sorted(cdir.rglob("*")):
                if f.is_dir() or is_hidden(f, cdir):
                    continue
                rel = f.relative_to(base).with_suffix("")
                key = "__".join(rel.parts).replace(".", "_")
                yield Record(key=key, label=self._index[cdir.name], path=f,
                             extras={"class_name": cdir.name, "source_path": str(f)})
