"""Which images count and which classes are guessed (paper Appendix A.2; docs/formats.md section 4).

- **The validation blacklist.** ILSVRC's devkit lists validation images whose annotations are
  ambiguous (``ILSVRC2014_clsloc_validation_blacklist.txt``: one 1-based validation image index
  per line); they are left out of the localisation error only (the devkit subtracts them from its
  denominator), never out of the classification error. An image's index is the number of its
  ILSVRC file name (``ILSVRC2012_val_00000042`` is 42), else its 1-based position in the split.
- **Top-k classes from a saved classification result.** The paper's fully-fledged protocol takes
  the top-5 classes from "our best-performing classification system (Sect. 4.5)". Here they come
  from ``posteriors.npz`` files of ``vgg evaluate`` (several files: their nets side by side, then
  fused as in Table 6), images matched by key; the dense evaluation of one classifier stays the
  fallback when no file is given.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from pipeline.errors import UserError

__all__ = ["read_blacklist", "image_index", "TopClasses", "load_top_classes"]

_VAL_NUMBER = re.compile(r"^ILSVRC\d{4}_val_(\d+)$")


def read_blacklist(path: str | Path) -> set[int]:
    """The 1-based image indices of a devkit blacklist file (blank lines and ``#`` comments ignored).

    Raises:
        UserError: a missing file or a line that is not a positive integer.
    """
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


class TopClasses:
    """Per-image posteriors from saved classification results, in the data's class order."""

    def __init__(self, by_key: dict[str, np.ndarray], source: dict) -> None:
        self.by_key = by_key
        self.source = source

    def posteriors(self, key: str) -> np.ndarray:
        """The posteriors of one image (by key)."""
        p = self.by_key.get(key)
        if p is None:
            raise UserError(f"image {key!r} is not in the posteriors ({self.source['files']}); evaluate the same "
                            "data and split with `vgg evaluate --method both`")
        return p

    def top(self, key: str, k: int) -> list[int]:
        """The k classes of highest posterior (ties: lower index first, as the dense protocol)."""
        return [int(c) for c in np.argsort(-self.posteriors(key), kind="stable")[:k]]


def load_top_classes(files: list[str], method: str, nets: list[int] | None, classes: list[str],
                     names: list[str] | None = None) -> TopClasses:
    """Read and fuse saved posteriors, mapped to the data's classes.

    Args:
        files: ``posteriors.npz`` files (or their folders) of ``vgg evaluate``.
        method: dense, multicrop or both (their combination), as stored.
        nets: indices of the stored nets to fuse (default all).
        classes: the data's classes; ``names``: their names (see ``class_order``).
    Raises:
        UserError: unreadable files, files of other images or classes, a method or net not stored.
    """
    from pipeline.evaluate.posteriors import load_posteriors, merge_posteriors
    from pipeline.localise.evaluate import class_order

    post = merge_posteriors([load_posteriors(f) for f in files])
    scores = post.select(method, nets)
    order = class_order(f"posteriors {', '.join(files)}", post.classes, len(post.classes), classes, names)
    if order is not None:
        scores = scores[:, order]
    source = {"files": [str(f) for f in files], "method": method, "nets": nets,
              "net_labels": [n.get("label") or n.get("checkpoint") for n in post.nets]}
    return TopClasses({k: scores[i] for i, k in enumerate(post.ids)}, source)
