"""ImageFolder layout: ``<root>/<split>/<class>/<file>`` or ``<root>/<class>/<file>`` (torchvision's class order).

Hidden files and folders are ignored; files are not filtered by extension (decoding is by content,
and what is not an image becomes a skip of the stage that decodes it).
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
        split_dirs = all(p.name in SPLIT_NAMES for p in top)
        self._splits = {p.name: p for p in top} if split_dirs else {"all": self.root}
        self._classes = sorted({p.name for d in self._splits.values() for p in class_dirs(d)})
        self._index = {c: i for i, c in enumerate(self._classes)}

    def records(self, split: str) -> Iterator[Record]:
        self._check_split(split, self.root)
        base = self._splits[split]
        for cdir in class_dirs(base):
            for f in sorted(cdir.rglob("*")):
                if f.is_dir() or is_hidden(f, cdir):
                    continue
                rel = f.relative_to(base).with_suffix("")
                key = "__".join(rel.parts).replace(".", "_")
                yield Record(key=key, label=self._index[cdir.name], path=f,
                             extras={"class_name": cdir.name, "source_path": str(f)})
