"""PASCAL VOC 2012 action classification layout, one record per annotated person (docs/formats.md 2.6;
paper Appendix B, Table 12). Chosen with ``--format voc-action``; detected on its own only for a tree
with ``ImageSets/Action`` and no ``ImageSets/Main`` (a full VOC 2012 tree is read as classification).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.sources.base import Record, register_source
from pipeline.sources.voc import DevkitSource, parse_xml, voc_year_dir, xml_box

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


def parse_action_xml(data: bytes) -> dict[int, dict[str, Any]]:
    """Persons of an action annotation: 1-based object index (counting every ``<object>``) -> its box
    (:func:`~pipeline.sources.voc.xml_box`; objects without one are left out) and ``actions``, the 0/1
    flags of its ``<actions>`` element (None without one)."""
    root, size = parse_xml(data)
    out = {}
    for idx, obj in enumerate(root.iter("object"), start=1):
        box = xml_box(obj, size)
        if box is None:
            continue
        acts = obj.find("actions")
        flags = None if acts is None else {a.tag: int(float((a.text or "0").strip() or 0) > 0.5) for a in acts}
        out[idx] = {**box, "actions": flags}
    return out


@register_source("voc-action")
class VOCActionSource(DevkitSource):
    """PASCAL VOC 2012 actions: one record per annotated person, with its box and 1/-1 action labels."""

    task = "Action"
    split_word = "action split"
    detect_priority = 15

    @classmethod
    def detect(cls, root: Path) -> bool:
        return super().detect(root) and not (voc_year_dir(root, "Action") / "ImageSets" / "Main").is_dir()

    def _default_classes(self) -> list[str]:
        """The action flags of the first annotated person, else :data:`VOC_ACTIONS`."""
        for split in self._splits:
            for image_id in self.image_ids(split):
                xml = self.dir / "Annotations" / f"{image_id}.xml"
                if xml.is_file():
                    for p in parse_action_xml(xml.read_bytes()).values():
                        if p["actions"]:
                            return sorted(p["actions"])
        return list(VOC_ACTIONS)

    def _labels(self, split: str) -> dict[tuple[str, int], list[int]] | None:
        """(image, person) -> label per action from the per-action files; None when a file is missing."""
        files = self._class_files(split, self._classes)
        if files is None:
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
        """The persons of the per-action files, else (an unlabelled split) those with ``<actions>`` flags."""
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
                             extras={"voc_id": image_id, "person": idx, "year": self.year, "source_path": str(path)})
