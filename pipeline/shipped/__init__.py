"""The small real datasets that ship in ``data/`` and their deterministic preparation (data/README.md).

Nothing is downloaded, ever: every layout here is derived from files in the repository or from
files installed with a dependency (scikit-learn's digits).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from pipeline.io import atomic_write_json, read_json, umask_mode
from pipeline.reuse import Output, Recorded, check_reusable, identity

#: ``data/`` at the top of the repository.
DATA_DIR = Path(__file__).resolve().parents[2] / "data"

__all__ = ["DATA_DIR", "MARKER", "prepared_tree", "pascal_xml", "write_image_sets"]


def prepared_tree(out: str | os.PathLike[str], params: dict, build: Callable[[Path], None]) -> Path:
    """Build a derived dataset tree under ``out`` once: ``build(tmp)`` writes it into a temporary sibling folder,
    renamed to ``out`` when complete with a ``.prepared.json`` marker holding ``params`` (its identity). A tree of
    the same parameters is reused; one of other parameters (named in the error), or another folder, is refused."""
    out = Path(out)
    ident = identity(**params)
    dataset = params.get("dataset", "dataset")

    if check_reusable(_Tree(out, dataset), ident) == "reuse":
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(umask_mode(0o777))  # mkdtemp creates 0700
    try:
        build(tmp)
        atomic_write_json(tmp / MARKER, ident)  # the marker is the identity itself
        if out.exists():
            out.rmdir()
        os.rename(tmp, out)  # the tree appears complete or not at all
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


#: the identity a prepared tree writes last
MARKER = ".prepared.json"


class _Tree(Output):
    """A prepared dataset tree: its ``.prepared.json`` record, or a foreign folder in its place."""

    hint = "choose another folder"

    def __init__(self, out: Path, dataset: str) -> None:
        super().__init__(out)
        self.dataset, self.what = dataset, f"a {dataset} tree prepared with other parameters"

    def read(self) -> Recorded | None:
        if (self.path / MARKER).exists():
            try:
                return Recorded(read_json(self.path / MARKER), True)
            except ValueError as e:
                return Recorded(None, False, str(e))
        if self.path.exists() and any(self.path.iterdir()):
            return Recorded(None, False, f"exists and is not a prepared {self.dataset} tree")
        return None


def pascal_xml(filename: str, canvas: int, source: Mapping[str, str], objects: list[Mapping[str, Any]],
               folder: str) -> bytes:
    """A PASCAL VOC annotation file of a ``canvas`` x ``canvas`` RGB image with one ``<object>`` per mapping: its
    items become child elements in order, a mapping value nested elements (``bndbox``, ``actions``)."""
    def add(parent: ET.Element, items: Mapping[str, Any]) -> None:
        for k, v in items.items():
            el = ET.SubElement(parent, k)
            if isinstance(v, Mapping):
                add(el, v)
            else:
                el.text = str(v)

    root = ET.Element("annotation")
    add(root, {"folder": folder, "filename": filename, "source": source,
               "size": {"width": canvas, "height": canvas, "depth": 3}, "segmented": 0})
    for o in objects:
        add(ET.SubElement(root, "object"), o)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8") + b"\n"


def write_image_sets(folder: Path, members: Mapping[str, list[str]], classes: list[str],
                     lines: Callable[[str, int], str]) -> None:
    """The devkit's lists: ``{split}.txt`` (image ids) and ``{class}_{split}.txt`` (``lines(image id, class
    index)`` per image of the split)."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, ids in members.items():
        (folder / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
        for c, name in enumerate(classes):
            (folder / f"{name}_{split}.txt").write_text("".join(lines(i, c) for i in ids), encoding="utf-8")
