"""PASCAL VOC 2007 / 2012 classification layout (docs/formats.md section 2; paper App. B).

``VOCdevkit/VOC2007/{JPEGImages/<id>.jpg, Annotations/<id>.xml, ImageSets/Main/<split>.txt,
ImageSets/Main/<class>_<split>.txt}``. Each image gets the 20 per-class labels 1 (a non-difficult
object of the class), -1 (absent) or 0 (only difficult objects), read from the per-class files or,
where those are missing (e.g. an unlabelled test set), derived the same way from the XML
annotations. Boxes come from the XML with their ``difficult`` flags. The XML parser here is also
used for ILSVRC's PASCAL-style box annotations.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.sources.base import Record, Source, register_source

__all__ = ["VOCSource", "VOC_CLASSES", "parse_voc_xml"]

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


def _year_dir(root: Path, year: str | None) -> Path:
    if (root / "JPEGImages").is_dir():
        return root
    base = root / "VOCdevkit" if (root / "VOCdevkit").is_dir() else root
    years = sorted(p for p in base.glob("VOC20*") if (p / "JPEGImages").is_dir())
    if year is not None:
        years = [p for p in years if p.name == f"VOC{year}"]
        if not years:
            raise UserError(f"{root}: no VOC{year} folder with JPEGImages")
    if len(years) != 1:
        raise UserError(f"{root}: " + ("no VOC year folder (VOC2007/JPEGImages)" if not years else
                        f"several VOC years ({', '.join(p.name for p in years)}); pass source option year=2007"))
    return years[0]


def _classes_of(main: Path, splits: list[str]) -> list[str]:
    """Class names from ``<class>_<split>.txt`` files (sorted); the 20 VOC classes when there are none."""
    suffixes = tuple(f"_{s}" for s in splits)
    names = {p.stem.rsplit("_", 1)[0] for p in main.glob("*_*.txt") if p.stem.endswith(suffixes)}
    return sorted(names) if names else list(VOC_CLASSES)


@register_source("voc")
class VOCSource(Source):
    """PASCAL VOC: splits from ``ImageSets/Main/<split>.txt``; 20 labels per image; boxes."""

    detect_priority = 20
    label_kind = "multi"

    @classmethod
    def detect(cls, root: Path) -> bool:
        try:
            _year_dir(root, None)
            return True
        except UserError:
            return False

    def __init__(self, root, year: str | int | None = None, **options) -> None:
        super().__init__(root, **options)
        self.dir = _year_dir(self.root, None if year is None else str(year))
        self.year = self.dir.name[3:]
        main = self.dir / "ImageSets" / "Main"
        self._splits = (
            sorted(p.stem for p in main.glob("*.txt") if re.fullmatch(r"[a-z]+", p.stem)) if main.is_dir() else []
        )
        if not self._splits:
            raise UserError(f"{self.dir}: no ImageSets/Main/<split>.txt files")
        self._classes = _classes_of(main, self._splits)

    @property
    def classes(self) -> list[str]:
        """The 20 VOC classes, or the classes named by the tree's ``<class>_<split>.txt`` files
        (a VOC-format dataset of other objects), sorted."""
        return list(self._classes)

    def splits(self) -> list[str]:
        return list(self._splits)

    def _class_labels(self, split: str) -> dict[str, dict[str, int]] | None:
        main = self.dir / "ImageSets" / "Main"
        files = {c: main / f"{c}_{split}.txt" for c in self._classes}
        if not all(f.is_file() for f in files.values()):
            return None
        out: dict[str, dict[str, int]] = {}
        for c, f in files.items():
            d = {}
            for line in f.read_text().splitlines():
                parts = line.split()
                if len(parts) >= 2:
                    d[parts[0]] = int(parts[-1])
            out[c] = d
        return out

    def records(self, split: str) -> Iterator[Record]:
        if split not in self._splits:
            raise UserError(f"{self.dir}: no split {split!r} (has {', '.join(self._splits)})")
        ids = [
            ln.split()[0]
            for ln in (self.dir / "ImageSets" / "Main" / f"{split}.txt").read_text().splitlines()
            if ln.strip()
        ]
        per_class = self._class_labels(split)
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
                labels = [per_class[c].get(i, -1) for c in self._classes]
            elif boxes is not None:
                labels = []
                for c in self._classes:
                    objs = [b for b in boxes if b["name"] == c]
                    labels.append(1 if any(not b["difficult"] for b in objs) else (0 if objs else -1))
            else:
                labels = None
            yield Record(key=i, path=self.dir / "JPEGImages" / f"{i}.jpg", labels=labels, boxes=boxes, extras=extras)
