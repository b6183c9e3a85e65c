"""PASCAL VOC 2012 action classification layout, one record per annotated person (paper Appendix B, Table 12).

``VOCdevkit/VOC2012/{JPEGImages/<id>.jpg, Annotations/<id>.xml, ImageSets/Action/<split>.txt,
ImageSets/Action/<action>_<split>.txt}``, as the VOC 2012 devkit has it:

* ``ImageSets/Action/<split>.txt``: the image ids of the split, one per line;
* ``ImageSets/Action/<action>_<split>.txt``: one line per annotated person, ``<image id> <person> <label>``,
  ``person`` the 1-based index of the ``<object>`` in the image's XML (counting every object, as the
  devkit's ``rec.objects(j)``), ``label`` 1 (the person does the action) or -1;
* ``Annotations/<id>.xml``: each person an ``<object>`` with its ``<bndbox>`` and an ``<actions>``
  element holding one 0/1 flag per action (``<jumping>0</jumping>`` ...; VOC 2012 adds ``<other>``).

The task classifies each person, "given a bounding box of the person performing the action", so
every record here is one person: key ``<image id>-<person>``, the image's file, the person's box
(the only box of the record) and the 1/-1 label of every action. Labels come from the per-action
files; where those are missing (the unlabelled test split) the persons are those with an
``<actions>`` element and their labels come from its flags. Actions are the per-action files' names
(sorted), or the XML's flag names when there are no such files. ``other`` ("none of the above") is
read like any action; the devkit does not score it, and neither does ``voc12-action``.

The reader is chosen with ``--format voc-action``; it is detected on its own only for a tree with
``ImageSets/Action`` and no ``ImageSets/Main`` (a full VOC 2012 tree is read as classification).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.sources.base import Record, Source, register_source
from pipeline.sources.voc import list_classes, list_splits, read_devkit_list, voc_year_dir

__all__ = ["VOCActionSource", "VOC_ACTIONS", "parse_action_xml", "person_key", "split_person_key"]

#: The VOC 2012 actions (the devkit's VOCopts.actions; "other" is annotated but not scored).
VOC_ACTIONS = ["jumping", "phoning", "playinginstrument", "reading", "ridingbike", "ridinghorse", "running",
               "takingphoto", "usingcomputer", "walking", "other"]


def person_key(image_id: str, person: int) -> str:
    """Record key of person ``person`` (1-based) of image ``image_id``."""
    return f"{image_id}-{person}"


def split_person_key(key: str) -> tuple[str, int]:
    """(image id, person index) of a key made by :func:`person_key`."""
    image_id, _, person = str(key).rpartition("-")
    if not image_id or not person.isdigit():
        raise UserError(f"{key!r} is not a person key '<image id>-<person>' of a voc-action source")
    return image_id, int(person)


def _float(el: ET.Element | None, tag: str) -> float | None:
    text = el.findtext(tag) if el is not None else None
    try:
        return float(text.strip()) if text is not None else None
    except ValueError:
        return None


def parse_action_xml(data: bytes) -> dict[int, dict[str, Any]]:
    """Persons of an action annotation: 1-based object index -> box and action flags.

    Returns:
        ``{index: {"xmin", "ymin", "xmax", "ymax", "name", "actions": {action: 0/1} or None}}`` for
        every object with a usable box (coordinates ordered, clipped to the image size when known).
    """
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise UserError(f"bad annotation XML: {e}") from None
    w, h = _float(root, "size/width"), _float(root, "size/height")
    out = {}
    for idx, obj in enumerate(root.iter("object"), start=1):
        c = [_float(obj.find("bndbox"), k) for k in ("xmin", "ymin", "xmax", "ymax")]
        if any(v is None for v in c):
            continue
        x0, x1 = sorted((c[0], c[2]))
        y0, y1 = sorted((c[1], c[3]))
        if w and h:
            x0, x1, y0, y1 = max(0.0, x0), min(w, x1), max(0.0, y0), min(h, y1)
        if x1 <= x0 or y1 <= y0:
            continue
        acts = obj.find("actions")
        flags = None
        if acts is not None:
            flags = {a.tag: int(float((a.text or "0").strip() or 0) > 0.5) for a in acts}
        out[idx] = {"xmin": x0, "ymin": y0, "xmax": x1, "ymax": y1, "name": (obj.findtext("name") or "").strip(),
                    "actions": flags}
    return out


@register_source("voc-action")
class VOCActionSource(Source):
    """PASCAL VOC 2012 actions: one record per annotated person, with its box and 1/-1 action labels."""

    detect_priority = 15
    label_kind = "multi"

    @classmethod
    def detect(cls, root: Path) -> bool:
        try:
            d = voc_year_dir(root, "Action")
        except UserError:
            return False
        return not (d / "ImageSets" / "Main").is_dir()

    def __init__(self, root, year: str | int | None = None, **options) -> None:
        super().__init__(root, **options)
        self.dir = voc_year_dir(self.root, "Action", None if year is None else str(year))
        self.sets = self.dir / "ImageSets" / "Action"
        self._splits = list_splits(self.sets)
        if not self._splits:
            raise UserError(f"{self.dir}: no ImageSets/Action/<split>.txt files")
        self._classes = list_classes(self.sets, self._splits) or self._classes_from_xml()

    def _classes_from_xml(self) -> list[str]:
        for split in self._splits:
            for image_id in self.image_ids(split):
                xml = self.dir / "Annotations" / f"{image_id}.xml"
                if xml.is_file():
                    for p in parse_action_xml(xml.read_bytes()).values():
                        if p["actions"]:
                            return sorted(p["actions"])
        return list(VOC_ACTIONS)

    @property
    def classes(self) -> list[str]:
        """The actions (sorted), ``other`` included when the tree has it."""
        return list(self._classes)

    def splits(self) -> list[str]:
        return list(self._splits)

    def image_ids(self, split: str) -> list[str]:
        """Image ids of ``ImageSets/Action/<split>.txt``, in file order."""
        if split not in self._splits:
            raise UserError(f"{self.dir}: no action split {split!r} (has {', '.join(self._splits)})")
        return read_devkit_list(self.sets / f"{split}.txt")

    def _labels(self, split: str) -> dict[tuple[str, int], list[int]] | None:
        """(image, person) -> label per action from the per-action files; None when a file is missing."""
        files = [self.sets / f"{c}_{split}.txt" for c in self._classes]
        if not all(f.is_file() for f in files):
            return None
        out: dict[tuple[str, int], list[int]] = {}
        for c, f in enumerate(files):
            for n, line in enumerate(f.read_text().splitlines(), start=1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 3:
                    raise UserError(f"{f}:{n}: expected '<image id> <person> <label>', got {line!r}")
                key = (parts[0], int(parts[1]))
                out.setdefault(key, [-1] * len(self._classes))[c] = 1 if int(parts[2]) > 0 else -1
        return out

    def records(self, split: str) -> Iterator[Record]:
        ids = self.image_ids(split)
        labels = self._labels(split)
        persons_of: dict[str, list[int]] = {}
        for image_id, person in (labels or {}):
            persons_of.setdefault(image_id, []).append(person)
        for image_id in ids:
            xml = self.dir / "Annotations" / f"{image_id}.xml"
            if not xml.is_file():
                raise UserError(f"{xml}: missing annotation of action image {image_id}")
            persons = parse_action_xml(xml.read_bytes())
            wanted = sorted(persons_of.get(image_id, [])) if labels is not None else \
                [i for i, p in persons.items() if p["actions"] is not None]
            for idx in wanted:
                if idx not in persons:
                    raise UserError(f"{xml}: person {idx} is listed in ImageSets/Action but has no box")
                p = persons[idx]
                if labels is not None:
                    lab = labels[(image_id, idx)]
                else:
                    lab = [1 if (p["actions"] or {}).get(c) else -1 for c in self._classes]
                box = {k: p[k] for k in ("xmin", "ymin", "xmax", "ymax", "name")}
                box.update(difficult=False, person=idx)
                path = self.dir / "JPEGImages" / f"{image_id}.jpg"
                yield Record(key=person_key(image_id, idx), path=path, labels=lab, boxes=[box],
                             extras={"voc_id": image_id, "person": idx, "year": self.dir.name[3:],
                                     "source_path": str(path)})
