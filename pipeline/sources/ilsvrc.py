"""ImageNet ILSVRC-2012 CLS-LOC layouts (docs/formats.md section 1; paper 2.1 and 3.1 "Dataset").

Train folders or tars (the outer ``ILSVRC2012_img_train.tar`` read in place), val flat or in class
folders, labelled by the devkit, the synset label file or the Kaggle solution; boxes from XML.
"""

from __future__ import annotations

import csv
import io
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.sources.base import Record, Source, plain_files, register_source
from pipeline.sources.voc import parse_voc_xml

__all__ = ["ILSVRCSource", "read_devkit"]

WNID = re.compile(r"^n\d{8}$")
GT_FILE = "ILSVRC2012_validation_ground_truth.txt"


def _members(tar: Path, fileobj=None) -> Iterator[tuple[str, int, int]]:
    """(member name, data offset in the file, size) of the regular files of a tar (the file ``tar``, or
    the tar starting at the position of ``fileobj``, a tar inside a tar: tarfile counts from there)."""
    with tarfile.open(name=None if fileobj else tar, fileobj=fileobj, mode="r:") as tf:
        for m in tf:
            if m.isfile():
                yield m.name, m.offset_data, m.size


def _stem(name: str) -> str:
    return Path(name).name.split(".", 1)[0]


def _is_hidden_member(name: str) -> bool:
    return any(p.startswith(".") and p not in (".", "..") for p in Path(name).parts)


def read_devkit(devkit: Path) -> tuple[list[str], dict[int, str], dict[str, str], list[int]]:
    """(leaf wnids in ID order, ID -> wnid, wnid -> words, val ground-truth IDs) of the devkit.

    ``devkit`` is the unpacked ``ILSVRC2012_devkit_t12`` folder or its ``.tar.gz``.
    """
    import scipy.io

    files: dict[str, bytes] = {}
    if devkit.is_dir():
        for name in ("meta.mat", GT_FILE):
            hits = sorted(devkit.rglob(name))
            if hits:
                files[name] = hits[0].read_bytes()
    else:
        with tarfile.open(devkit) as tf:
            for m in tf:
                base = Path(m.name).name
                if m.isfile() and base in ("meta.mat", GT_FILE):
                    files[base] = tf.extractfile(m).read()
    if "meta.mat" not in files:
        raise UserError(f"{devkit}: no data/meta.mat (is this ILSVRC2012_devkit_t12?)")
    syn = scipy.io.loadmat(io.BytesIO(files["meta.mat"]), squeeze_me=True)["synsets"]
    syn = [s for s in syn if int(s["num_children"]) == 0]
    id2wnid = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in syn}
    words = {str(s["WNID"]): str(s["words"]) for s in syn}
    gt = [int(x) for x in files[GT_FILE].decode().split()] if GT_FILE in files else []
    return [id2wnid[i] for i in sorted(id2wnid)], id2wnid, words, gt


@register_source("ilsvrc")
class ILSVRCSource(Source):
    """ILSVRC-2012: ``train`` and ``val`` splits in any of the layouts of docs/formats.md."""

    detect_priority = 20

    @classmethod
    def _layout(cls, root: Path) -> dict[str, Any]:
        kaggle = root / "ILSVRC" / "Data" / "CLS-LOC"
        files = {"mapping": root / "LOC_synset_mapping.txt", "solution": root / "LOC_val_solution.csv"}
        if kaggle.is_dir():
            return {**files, "train": kaggle / "train", "val": kaggle / "val", "train_tar": None, "val_tar": None,
                    "ann": root / "ILSVRC" / "Annotations" / "CLS-LOC", "kind": "kaggle"}
        ann = next((p for p in (root / "Annotations" / "CLS-LOC", root / "annotations", root / "bbox")
                    if p.is_dir()), None)
        return {**files, "train": root / "train", "val": root / "val", "train_tar": root / "ILSVRC2012_img_train.tar",
                "val_tar": root / "ILSVRC2012_img_val.tar", "ann": ann, "kind": "official"}

    @classmethod
    def detect(cls, root: Path) -> bool:
        if not root.is_dir():
            return False
        lay = cls._layout(root)
        if lay["kind"] == "kaggle" or (lay["train_tar"] and lay["train_tar"].is_file()):
            return True
        tr, va = lay["train"], lay["val"]
        if tr.is_dir() and any(WNID.match(p.name.removesuffix(".tar")) for p in tr.iterdir()):
            return True
        return va.is_dir() and any(p.name.startswith("ILSVRC2012_val_") for p in va.iterdir())

    def __init__(self, root, devkit: str | None = None, annotations: str | None = None, **options) -> None:
        super().__init__(root, **options)
        self.lay = self._layout(self.root)
        if annotations is not None:
            self.lay["ann"] = Path(annotations)
        found = (p for p in (self.root / "ILSVRC2012_devkit_t12", self.root / "ILSVRC2012_devkit_t12.tar.gz")
                 if p.exists())
        dk = Path(devkit) if devkit else next(found, None)
        if dk is not None and not dk.exists():
            raise UserError(f"devkit not found: {dk}")
        self.words: dict[str, str] = {}
        self._gt: list[int] = []
        self._id2wnid: dict[int, str] = {}
        wnids: list[str] = []
        if self.lay["mapping"].is_file():
            for line in self.lay["mapping"].read_text().splitlines():
                if line.strip():
                    w, _, names = line.partition(" ")
                    wnids.append(w)
                    self.words[w] = names.strip()
        if dk is not None:
            leaves, self._id2wnid, words, self._gt = read_devkit(dk)
            wnids = wnids or leaves
            self.words = self.words or words
        if not wnids:
            wnids = sorted({w for w, _ in self._train_groups()} | set(self._val_class_dirs()))
        if not wnids:
            raise UserError(f"{self.root}: no ILSVRC synsets found (train/<wnid>, devkit or LOC_synset_mapping.txt)")
        self._classes = sorted(wnids)
        self._index = {w: i for i, w in enumerate(self._classes)}

    def _train_groups(self) -> list[tuple[str, Any]]:
        """(wnid, folder | tar path | (outer tar, offset, size)) of every training synset."""
        groups: list[tuple[str, Any]] = []
        tr = self.lay["train"]
        if tr.is_dir():
            for p in sorted(tr.iterdir()):
                if p.name.startswith("."):
                    continue
                if p.is_dir() and WNID.match(p.name):
                    groups.append((p.name, p))
                elif p.is_file() and p.suffix == ".tar" and WNID.match(p.stem):
                    groups.append((p.stem, p))
        outer = self.lay["train_tar"]
        if outer is not None and outer.is_file():
            have = {w for w, _ in groups}
            for name, off, size in _members(outer):
                w = _stem(name)
                if WNID.match(w) and name.endswith(".tar") and w not in have:
                    groups.append((w, (outer, off, size)))
        return sorted(groups, key=lambda g: g[0])

    def _val_class_dirs(self) -> list[str]:
        va = self.lay["val"]
        return sorted(p.name for p in va.iterdir() if p.is_dir() and WNID.match(p.name)) if va.is_dir() else []

    def _boxes(self, *rel: str) -> list[dict[str, Any]] | None:
        ann = self.lay["ann"]
        if ann is None:
            return None
        for cand in (ann.joinpath(*rel), ann.joinpath(*rel[1:])):
            if cand.is_file():
                try:
                    return parse_voc_xml(cand.read_bytes())[1]
                except UserError:
                    return None
        return None

    def splits(self) -> list[str]:
        out = []
        if self._train_groups():
            out.append("train")
        va, vt = self.lay["val"], self.lay["val_tar"]
        if va.is_dir() or (vt is not None and vt.is_file()):
            out.append("val")
        return out

    def _extras(self, wnid: str, src: str) -> dict[str, Any]:
        return {"wnid": wnid, "class_name": self.words.get(wnid, wnid), "source_path": src}

    def records(self, split: str) -> Iterator[Record]:
        self._check_split(split, self.root)
        yield from (self._train() if split == "train" else self._val())

    def _train(self) -> Iterator[Record]:
        for wnid, where in self._train_groups():
            label = self._index.get(wnid)
            if label is None:  # a synset outside the class list (e.g. not one of the devkit's leaves)
                yield Record(key=f"{wnid}__excluded", path=where if isinstance(where, Path) else where[0],
                             extras={"skip": f"synset {wnid} is not one of the classes",
                                     **self._extras(wnid, str(where))})
                continue
            if isinstance(where, Path) and where.is_dir():
                for f in plain_files(where):
                    yield Record(key=_stem(f.name), label=label, path=f, extras=self._extras(wnid, str(f)),
                                 boxes=self._boxes("train", wnid, f"{_stem(f.name)}.xml"))
                continue
            if isinstance(where, Path):
                tar, members = where, _members(where)
                src = str(where)
            else:
                tar, off, _ = where
                with open(tar, "rb") as fh:
                    fh.seek(off)
                    members = list(_members(tar, fileobj=fh))
                src = f"{tar}:{wnid}.tar"
            for name, moff, msize in sorted(members):
                if _is_hidden_member(name):
                    continue
                stem = _stem(name)
                yield Record(key=stem, label=label, path=tar, span=(moff, msize),
                                      boxes=self._boxes("train", wnid, f"{stem}.xml"),
                                      extras=self._extras(wnid, f"{src}/{name}"))

    def _val_labels(self) -> dict[str, tuple[str, list[dict[str, Any]] | None]] | None:
        """stem -> (wnid, boxes or None) from the Kaggle solution file, if present."""
        sol = self.lay["solution"]
        if not sol.is_file():
            return None
        out = {}
        with open(sol, newline="") as fh:
            for row in csv.DictReader(fh):
                toks = (row.get("PredictionString") or "").split()
                if not toks:
                    continue
                boxes = [{"xmin": float(t[1]), "ymin": float(t[2]), "xmax": float(t[3]), "ymax": float(t[4]),
                          "name": t[0], "difficult": False}
                         for t in (toks[i:i + 5] for i in range(0, len(toks) - 4, 5))]
                out[row["ImageId"]] = (toks[0], boxes)
        return out

    def _val(self) -> Iterator[Record]:
        va, vt = self.lay["val"], self.lay["val_tar"]
        class_dirs = self._val_class_dirs()
        if class_dirs:  # val/<wnid>/ (torchvision's prepared layout)
            for wnid in (w for w in class_dirs if w in self._index):
                for f in plain_files(va / wnid):
                    yield Record(key=_stem(f.name), label=self._index[wnid], path=f, extras=self._extras(wnid, str(f)),
                                 boxes=self._boxes("val", f"{_stem(f.name)}.xml"))
            return
        if va.is_dir():
            files = [(f.name, f, None) for f in plain_files(va)]
        else:
            files = [(n, vt, (o, s)) for n, o, s in sorted(_members(vt)) if not _is_hidden_member(n)]
        solution = self._val_labels()
        synset_file = self.root / "imagenet_2012_validation_synset_labels.txt"
        by_line = synset_file.read_text().split() if synset_file.is_file() else None
        if solution is None and not self._gt and by_line is None:
            raise UserError(f"{self.root}: val labels need the devkit (--devkit ILSVRC2012_devkit_t12.tar.gz), "
                            "imagenet_2012_validation_synset_labels.txt or LOC_val_solution.csv")
        for pos, (name, path, span) in enumerate(files):
            stem = _stem(name)
            src = str(path) if span is None else f"{path}/{name}"
            boxes = self._boxes("val", f"{stem}.xml")
            num = re.search(r"_(\d+)$", stem)  # the file's number, else its position, gives the label's line
            line = int(num.group(1)) - 1 if num else pos
            wnid = None
            if solution is not None:
                if stem in solution:
                    wnid, sboxes = solution[stem]
                    boxes = boxes if boxes is not None else sboxes
            elif self._gt:
                if 0 <= line < len(self._gt):
                    wnid = self._id2wnid.get(self._gt[line])
            elif 0 <= line < len(by_line):
                wnid = by_line[line]
            if wnid is None or wnid not in self._index:
                reason = "no validation label" if wnid is None else f"label {wnid} is not one of the classes"
                yield Record(key=stem, path=path, span=span, extras={"skip": reason, "source_path": src})
                continue
            yield Record(key=stem, label=self._index[wnid], path=path, span=span, boxes=boxes,
                                  extras=self._extras(wnid, src))
