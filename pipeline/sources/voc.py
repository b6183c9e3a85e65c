"""PASCAL VOC 2007 / 2012 classification layout (docs/formats.md section 2; paper App. B).

``VOCdevkit/VOC2007/{JPEGImages/<id>.jpg, Annotations/<id>.xml, ImageSets/Main/<split>.txt,
ImageSets/Main/<class>_<split>.txt}``. Each image gets the 20 per-class labels 1 (a non-difficult
object of the class), -1 (absent) or 0 (only difficult objects), read from the per-class files or,
where those are missing (e.g. an unlabelled test set), derived the same way from the XML
annotations. Boxes come from the XML with their ``difficult`` flags. The XML parser here is also
used for ILSVRC's PASCAL-style box annotations.

The devkit's lists are read only here and in :mod:`pipeline.sources.voc_action` (the transfer
protocols read them through these readers), and every reader finds its year folder by one rule,
:func:`voc_year_dir`.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pipeline.errors import UserError
from pipeline.sources.base import Record, Source, register_source

__all__ = ["VOCSource", "VOC_CLASSES", "parse_voc_xml", "voc_year_dir", "read_devkit_list", "list_splits",
           "list_classes", "file_part"]

VOC_CLASSES = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor"]


def _num(el: ET.Element | None) -> float | None:
    if el is None or el.text is None:
        return None
    try:
        return float(el.text.strip())
    except ValueError:
        return None


def parse_voc_xml(data: bytes) -> tuple[tuple[int, int] | None, list[dict[str, Any]]]:
    """((width, height) or None, boxes) of a PASCAL-style annotation.

    Boxes are ``{"xmin","ymin","xmax","ymax","name","difficult"}`` in source pixels. Noise seen in
    ILSVRC (docs/formats.md) is repaired: float coordinates are kept as floats, min/max are ordered,
    coordinates are clipped to the image size when it is known, and boxes without area or with
    missing coordinates are dropped. The ``<filename>`` field is never used.
    """
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise UserError(f"bad annotation XML: {e}") from None
    size = None
    w, h = _num(root.find("size/width")), _num(root.find("size/height"))
    if w and h:
        size = (int(w), int(h))
    boxes = []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        bb = obj.find("bndbox")
        if bb is None:
            continue
        c = [_num(bb.find(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
        if any(v is None for v in c):
            continue
        x0, x1 = sorted((c[0], c[2]))
        y0, y1 = sorted((c[1], c[3]))
        if size is not None:
            x0, x1 = max(0.0, x0), min(float(size[0]), x1)
            y0, y1 = max(0.0, y0), min(float(size[1]), y1)
        if x1 <= x0 or y1 <= y0:
            continue
        diff = obj.findtext("difficult")
        boxes.append({"xmin": x0, "ymin": y0, "xmax": x1, "ymax": y1, "name": name,
                      "difficult": bool(diff and diff.strip() not in ("0", ""))})
    return size, boxes


def voc_year_dir(path: str | os.PathLike[str], task: str = "Main", year: str | None = None) -> Path:
    """The year folder (``VOC2007``, ...) whose ``ImageSets/<task>`` lists are read: the one search rule.

    ``path`` is the year folder itself, its ``ImageSets`` or ``ImageSets/<task>`` folder, a
    ``VOCdevkit`` folder or a folder holding one; below the last two there must be exactly one year
    folder with ``ImageSets/<task>``, or one named ``VOC<year>``.
    """
    p = Path(path)
    if p.name == task and p.parent.name == "ImageSets":
        p = p.parent.parent
    elif p.name == "ImageSets":
        p = p.parent
    if (p / "ImageSets" / task).is_dir():
        return p
    base = p / "VOCdevkit" if (p / "VOCdevkit").is_dir() else p
    years = sorted(d for d in base.glob("VOC20*") if (d / "ImageSets" / task).is_dir())
    if year is not None:
        years = [d for d in years if d.name == f"VOC{year}"]
    if len(years) != 1:
        what = f"VOC{year or '20xx'} folder with ImageSets/{task} (VOCdevkit/VOC2007/ImageSets/{task})"
        raise UserError(f"{path}: " + (f"no {what}" if not years else f"several VOC years "
                        f"({', '.join(d.name for d in years)}); name one (its folder, or source option year=2007)"))
    return years[0]


def read_devkit_list(path: Path) -> list[str]:
    """The first field of every non-empty line of a devkit list (image ids), in file order."""
    return [line.split()[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def list_splits(sets: Path) -> list[str]:
    """The splits of a devkit lists folder: its ``<split>.txt`` files, ``<split>`` lower-case letters."""
    return sorted(p.stem for p in sets.glob("*.txt") if re.fullmatch(r"[a-z]+", p.stem)) if sets.is_dir() else []


def list_classes(sets: Path, splits: list[str]) -> list[str]:
    """Class names of the ``<class>_<split>.txt`` files of a devkit lists folder, sorted (none: [])."""
    suffixes = tuple(f"_{s}" for s in splits)
    return sorted({p.stem.rsplit("_", 1)[0] for p in sets.glob("*_*.txt") if p.stem.endswith(suffixes)})


_PLAIN = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9_.+-]*")


def file_part(name: str) -> str:
    """``name`` as a piece of a devkit file name: unchanged when plain (letters, digits, ``_+-.``, not
    starting with a dot), else percent-encoded UTF-8 (``../x`` -> ``..%2Fx``): never a separator,
    and two names never share a file."""
    return name if _PLAIN.fullmatch(name) else quote(name, safe="")


@register_source("voc")
class VOCSource(Source):
    """PASCAL VOC: splits from ``ImageSets/Main/<split>.txt``; 20 labels per image; boxes."""

    detect_priority = 20
    label_kind = "multi"

    @classmethod
    def detect(cls, root: Path) -> bool:
        try:
            voc_year_dir(root)
            return True
        except UserError:
            return False

    def __init__(self, root, year: str | int | None = None, **options) -> None:
        super().__init__(root, **options)
        self.dir = voc_year_dir(self.root, year=None if year is None else str(year))
        self.year = self.dir.name[3:]
        self.sets = self.dir / "ImageSets" / "Main"
        self._splits = list_splits(self.sets)
        if not self._splits:
            raise UserError(f"{self.dir}: no ImageSets/Main/<split>.txt files")
        self._classes = list_classes(self.sets, self._splits) or list(VOC_CLASSES)

    @property
    def classes(self) -> list[str]:
        """The 20 VOC classes, or the classes named by the tree's ``<class>_<split>.txt`` files
        (a VOC-format dataset of other objects), sorted."""
        return list(self._classes)

    def splits(self) -> list[str]:
        return list(self._splits)

    def image_ids(self, split: str) -> list[str]:
        """Image ids of ``ImageSets/Main/<split>.txt``, in file order."""
        if split not in self._splits:
            raise UserError(f"{self.dir}: no split {split!r} (has {', '.join(self._splits)})")
        return read_devkit_list(self.sets / f"{split}.txt")

    def class_labels(self, split: str, classes: list[str] | None = None) -> dict[str, list[int]] | None:
        """id -> label (1 / -1 / 0) per class of ``classes`` (default: the tree's) from the
        ``<class>_<split>.txt`` files (-1 where a file does not list the id); None when a file is missing.

        Raises:
            UserError: a class or split name that cannot name a devkit file (:func:`file_part`).
        """
        classes = self._classes if classes is None else classes
        for name in [*classes, split]:
            if file_part(name) != name:  # names are never paths
                raise UserError(f"{self.sets}: {name!r} cannot name a devkit file (<class>_<split>.txt); "
                                "class and split names there are letters, digits, '_', '+', '-' and '.'")
        files = [self.sets / f"{c}_{split}.txt" for c in classes]
        if not all(f.is_file() for f in files):
            return None
        out: dict[str, list[int]] = {}
        for c, f in enumerate(files):
            for line in f.read_text(encoding="utf-8").splitlines():
                parts = line.split()
                if len(parts) >= 2:
                    out.setdefault(parts[0], [-1] * len(classes))[c] = int(parts[-1])
        return out

    def records(self, split: str) -> Iterator[Record]:
        ids = self.image_ids(split)
        per_class = self.class_labels(split)
        for i in ids:
            xml = self.dir / "Annotations" / f"{i}.xml"
            extras = {"voc_id": i, "year": self.year, "source_path": str(self.dir / "JPEGImages" / f"{i}.jpg")}
            boxes = None
            if xml.is_file():
                try:
                    boxes = parse_voc_xml(xml.read_bytes())[1]
                except UserError as e:  # the image is still usable for classification
                    extras["annotation_error"] = str(e)
            if per_class is not None:
                labels = per_class.get(i, [-1] * len(self._classes))
            elif boxes is not None:
                labels = []
                for c in self._classes:
                    objs = [b for b in boxes if b["name"] == c]
                    labels.append(1 if any(not b["difficult"] for b in objs) else (0 if objs else -1))
            else:
                labels = None
            yield Record(key=i, path=self.dir / "JPEGImages" / f"{i}.jpg", labels=labels, boxes=boxes, extras=extras)
