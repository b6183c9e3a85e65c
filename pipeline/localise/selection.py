"""Which images count and which classes are guessed (paper Appendix A.2): usable images, class matching, the
devkit blacklist, the top-k classes of saved posteriors (docs/formats.md sections 4.4 and 4.9).
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from pipeline.errors import UserError
from pipeline.localise.boxes import ground_truth

__all__ = ["iter_ground_truth", "in_batches", "skip_summary", "class_names", "class_order", "read_blacklist",
           "image_index", "TopClasses", "load_top_classes", "MAX_LISTED"]

#: skips (and blacklisted images) listed by key in a summary; the rest are only counted
MAX_LISTED = 1000

T = TypeVar("T")
_VAL_NUMBER = re.compile(r"^ILSVRC\d{4}_val_(\d+)$")


def iter_ground_truth(view: Any, limit: int | None, skips: list[dict[str, str]], counts: dict[str, int]):
    """Yield (sample, GroundTruth) for usable images; record the others in ``skips`` (no box at all: UserError)."""
    with_boxes = 0
    for seen, sample in enumerate(itertools.islice(view, limit), start=1):
        counts["images"] = seen
        with_boxes += sample.boxes is not None
        reason = f"not decodable: {sample.error}" if sample.image is None else None
        if reason is None and sample.boxes is None:
            reason = "no box annotations"
        if reason is None:
            gt = ground_truth(sample.boxes, *sample.image.size, view.classes, sample.label)
            counts["boxes_clipped"] = counts.get("boxes_clipped", 0) + gt.clipped
            counts["boxes_skipped"] = counts.get("boxes_skipped", 0) + len(gt.skipped)
            skips.extend({"key": sample.key, "reason": r} for r in gt.skipped)
            if gt.classes:
                yield sample, gt
                continue
            reason = "only difficult boxes" if len(gt.labels) else "no usable box"
        skips.append({"key": sample.key, "reason": reason})
    if with_boxes == 0:
        raise UserError(f"the data ({view.kind}, split {view.split}) has no box annotations: localisation needs "
                        "boxes (VOC or ILSVRC XML annotations, or shards made from them)")


def in_batches(items: Iterable[T], n: int) -> Iterator[list[T]]:
    """Lists of ``n`` items, in order (the last may be shorter)."""
    it = iter(items)
    return iter(lambda: list(itertools.islice(it, n)), [])


def _skip_kind(reason: str) -> str:
    """The summary category of a skip reason: without the box index, before any ':' or '('."""
    if reason.startswith("box ") and ":" in reason:
        reason = reason.split(":", 1)[1].strip()
    return reason.split(":", 1)[0].split(" (", 1)[0].strip()


def skip_summary(skips: list[dict[str, str]]) -> dict[str, Any]:
    """Skips counted by kind of reason, and the first :data:`MAX_LISTED` of them."""
    return {"by_reason": dict(Counter(_skip_kind(s["reason"]) for s in skips)), "listed": skips[:MAX_LISTED]}


def class_names(view: Any) -> list[str] | None:
    """The data's human-readable class names where its classes are ids (ILSVRC wnids named by
    ``LOC_synset_mapping.txt`` or the devkit), else None."""
    words = getattr(getattr(view, "source", None), "words", None) or {}
    names = [str(words.get(c, c)).split(",")[0].strip() for c in view.classes]
    return names if words and names != list(view.classes) else None


def class_order(what: str, theirs: list[str] | None, count: int, classes: list[str],
                names: list[str] | None = None) -> np.ndarray | None:
    """How a net's outputs map to the data's classes, matched by id, else by ``names`` (:func:`class_names`): None
    (same order) or ``order[c]`` = the net's index of class c; another class count or other classes: UserError."""
    if count != len(classes):
        raise UserError(f"{what} has {count} classes but the data has {len(classes)}; "
                        "use a net trained on the same classes")
    if theirs and names is not None and sorted(theirs) == sorted(names) and sorted(theirs) != sorted(classes):
        classes = names
    if not theirs or list(theirs) == list(classes):
        return None
    if sorted(theirs) != sorted(classes):
        extra = sorted(set(theirs) - set(classes))[:3]
        raise UserError(f"{what} classes differ from the data's (e.g. {extra} not in the data)")
    return np.array([list(theirs).index(c) for c in classes], dtype=np.int64)


def read_blacklist(path: str | Path) -> set[int]:
    """The 1-based image indices of a devkit blacklist file (blank lines and ``#`` comments ignored)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"blacklist not found: {p}")
    out: set[int] = set()
    for n, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        if not text.isdigit() or int(text) < 1:
            raise UserError(f"{p}, line {n}: expected a 1-based image index, got {line.strip()!r}")
        out.add(int(text))
    return out


def image_index(key: str, position: int) -> int:
    """The 1-based validation index of an image: its ILSVRC file number, else its position in the split."""
    m = _VAL_NUMBER.match(key)
    return int(m.group(1)) if m else position


@dataclass
class TopClasses:
    """Per-image posteriors from saved classification results, in the data's class order."""

    by_key: dict[str, np.ndarray]
    source: dict[str, Any]

    def top(self, key: str, k: int) -> list[int]:
        """The k classes of highest posterior (ties: lower index first, as the dense protocol)."""
        p = self.by_key.get(key)
        if p is None:
            raise UserError(f"image {key!r} is not in the posteriors ({self.source['files']}); evaluate the same "
                            "data and split with `vgg evaluate --method both`")
        return [int(c) for c in np.argsort(-p, kind="stable")[:k]]


def load_top_classes(files: list[str], method: str, nets: list[int] | None, classes: list[str],
                     names: list[str] | None = None) -> TopClasses:
    """Saved posteriors (``posteriors.npz`` of ``vgg evaluate``, or their folders) of ``method``, the stored ``nets``
    fused (default all), mapped to the data's ``classes`` (``names``: their names)."""
    from pipeline.evaluate.posteriors import load_posteriors, merge_posteriors

    post = merge_posteriors([load_posteriors(f) for f in files])
    scores = post.select(method, nets)
    order = class_order(f"posteriors {', '.join(files)}", post.classes, len(post.classes), classes, names)
    if order is not None:
        scores = scores[:, order]
    source = {"files": [str(f) for f in files], "method": method, "nets": nets,
              "net_labels": [n.get("label") or n.get("checkpoint") for n in post.nets]}
    return TopClasses({k: scores[i] for i, k in enumerate(post.ids)}, source)
