"""PASCAL VOC 2007 / 2012 classification layout (docs/formats.md section 2; paper App. B).

Also the devkit's lists and XML for the other readers: every reader of ``ImageSets`` is a
:class:`DevkitSource` (its year folder found by :func:`voc_year_dir`), and ILSVRC's box files are
read by :func:`parse_voc_xml`.
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

__all__ = ["VOCSource", "DevkitSource", "VOC_CLASSES", "parse_voc_xml", "parse_xml", "xml_box", "voc_year_dir",
           "file_part"]

VOC_CLASSES = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor"]


def _num(el: ET.Element | None, tag: str) -> float | None:
    text = el.findtext(tag) if el is not None else None
    try:
        return float(text.strip()) if text is not None else None
    except ValueError:
        return None


def parse_xml(data: bytes) -> tuple[ET.Element, tuple[float, float] | None]:
    """The root of an annotation XML (a UserError when it does not parse) and its (width, height) if given."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise UserError(f"bad annotation XML: {e}") from None
    w, h = _num(root, "size/width"), _num(root, "size/height")
    return root, ((w, h) if w and h else None)


def xml_box(obj: ET.Element, size: tuple[float, float] | None) -> dict[str, Any] | None:
    """``{xmin, ymin, xmax, ymax, name}`` of an ``<object>``, repaired (docs/formats.md 1.6): min/max
    ordered, clipped to ``size`` (width, height) when known; None without a box of positive area."""
    c = [_num(obj.find("bndbox"), k) for k in ("xmin", "ymin", "xmax", "ymax")]
    if any(v is None for v in c):
        return None
    x0, x1 = sorted((c[0], c[2]))
    y0, y1 = sorted((c[1], c[3]))
    if size is not None:
        x0, x1 = max(0.0, x0), min(float(size[0]), x1)
        y0, y1 = max(0.0, y0), min(float(size[1]), y1)
    if x1 <= x0 or y1 <= y0:
        return None
    return {"xmin": x0, "ymin": y0, "xmax": x1, "ymax": y1, "name": (obj.findtext("name") or "").strip()}


def parse_voc_xml(data: bytes) -> tuple[tuple[int, int] | None, list[dict[str, Any]]]:
    """((width, height) or None, boxes with their ``difficult`` flag) of a PASCAL-style annotation."""
    root, wh = parse_xml(data)
    size = (int(wh[0]), int(wh[1])) if wh else None
    boxes = []
    for obj in root.iter("object"):
        box = xml_box(obj, size)
        if box is not None:
            diff = obj.findtext("difficult")
            boxes.append({**box, "difficult": bool(diff and diff.strip() not in ("0", ""))})
    return size, boxes


def voc_year_dir(path: str | os.PathLike[str], task: str = "Main", year: str | None = None) -> Path:
    """The year folder (``VOC2007``, ...) whose ``ImageSets/<task>`` lists are read (docs/transfer.md,
    "The devkit's lists"): ``path`` itself, above its ``ImageSets[/<task>]``, or the one below it."""
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


_PLAIN = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9_.+-]*")


def file_part(name: str) -> str:
    """``name`` as a piece of a devkit file name: unchanged when plain (letters, digits, ``_+-.``, not
    starting with a dot), else percent-encoded UTF-8 (``../x`` -> ``..%2Fx``): never a separator,
    and two names never share a file."""
    return name if _PLAIN.fullmatch(name) else quote(name, safe="")


class DevkitSource(Source):
    """A VOC year folder read through its ``ImageSets/<task>`` lists: splits are the ``<split>.txt`` files
    (lower-case words), classes the names of the ``<class>_<split>.txt`` files (sorted) or the defaults."""

    task = "Main"
    split_word = "split"  # in the error naming a missing split
    detect_priority = 20
    label_kind = "multi"

    @classmethod
    def detect(cls, root: Path) -> bool:
        try:
            voc_year_dir(root, cls.task)
            return True
        except UserError:
            return False

    def __init__(self, root, year: str | int | None = None, **options) -> None:
        super().__init__(root, **options)
        self.dir = voc_year_dir(self.root, self.task, None if year is None else str(year))
        self.year = self.dir.name[3:]
        self.sets = self.dir / "ImageSets" / self.task
        self._splits = sorted(p.stem for p in self.sets.glob("*.txt") if re.fullmatch(r"[a-z]+", p.stem))
        if not self._splits:
            raise UserError(f"{self.dir}: no ImageSets/{self.task}/<split>.txt files")
        suffixes = tuple(f"_{s}" for s in self._splits)
        named = {p.stem.rsplit("_", 1)[0] for p in self.sets.glob("*_*.txt") if p.stem.endswith(suffixes)}
        self._classes = sorted(named) or self._default_classes()

    def _default_classes(self) -> list[str]:
        return list(VOC_CLASSES)

    def image_ids(self, split: str) -> list[str]:
        """Image ids of ``ImageSets/<task>/<split>.txt``, in file order."""
        self._check_split(split, self.dir, self.split_word)
        lines = (self.sets / f"{split}.txt").read_text(encoding="utf-8").splitlines()
        return [line.split()[0] for line in lines if line.strip()]

    def _class_files(self, split: str, classes: list[str]) -> list[Path] | None:
        """The ``<class>_<split>.txt`` files of ``classes``; None when one is missing."""
        files = [self.sets / f"{c}_{split}.txt" for c in classes]
        return files if all(f.is_file() for f in files) else None


@register_source("voc")
class VOCSource(DevkitSource):
    """PASCAL VOC: splits from ``ImageSets/Main/<split>.txt``; 20 labels per image (or the tree's classes); boxes."""

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
        files = self._class_files(split, classes)
        if files is None:
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
