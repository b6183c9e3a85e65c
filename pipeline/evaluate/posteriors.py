"""Saved per-image class posteriors (``posteriors.npz``) per net, method and scale, from which every average of
paper 4.2-4.4 (over scales, methods, nets) is recomputed without running a net; format: docs/evaluation.md."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import UserError
from pipeline.evaluate.protocols import METHODS, combine_methods, fuse, methods_of, multi_scale
from pipeline.io import atomic_path

__all__ = ["FORMAT", "Posteriors", "load_posteriors", "merge_posteriors", "posteriors_file"]

FORMAT = "vgg-posteriors/1"
_KEY = re.compile(r"^p\.net(\d+)\.(dense|multicrop)\.(\d+)$")


@dataclass
class Posteriors:
    """Per-image posteriors of one or more nets, methods and scales."""

    ids: list[str]  #: image keys, in data order
    labels: np.ndarray  #: class indices (-1 for unlabelled images)
    classes: list[str]
    nets: list[dict[str, Any]]  #: one dict per net (label, checkpoint, sha256, model config, train scale, scales ...)
    arrays: dict[tuple[int, str, int], np.ndarray] = field(default_factory=dict)  #: (net, method, Q) -> N x C
    data: dict[str, Any] = field(default_factory=dict)  #: the evaluated data (path, split, fingerprint)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        n, c = len(self.ids), len(self.classes)
        if len(self.labels) != n:
            raise UserError(f"posteriors: {len(self.labels)} labels for {n} images")
        for key, arr in self.arrays.items():
            if arr.shape != (n, c):
                raise UserError(f"posteriors {key}: shape {arr.shape}, expected {(n, c)}")

    # -- what is stored
    def methods(self, net: int) -> list[str]:
        """Methods stored for one net (in the order dense, multicrop)."""
        return [m for m in METHODS if any(k[0] == net and k[1] == m for k in self.arrays)]

    def scales(self, net: int, method: str) -> list[int]:
        """Test scales Q stored for one net and method, ascending."""
        return sorted(k[2] for k in self.arrays if k[0] == net and k[1] == method)

    def _net(self, net: int) -> int:
        if not 0 <= net < len(self.nets):
            raise UserError(f"no net {net} in these posteriors (nets 0..{len(self.nets) - 1})")
        return net

    def _stored(self, net: int, method: str, scales: list[int] | None) -> list[int]:
        """``scales`` (default: every one stored) of one net and method, each checked to be stored."""
        have = self.scales(net, method)
        missing = [q for q in scales or [] if q not in have]
        if missing:
            raise UserError(f"net {net} has no {method} posteriors at Q={missing} (stored: {have})")
        return have if scales is None else list(scales)

    # -- recomputing the paper's averages
    def net_posteriors(self, net: int, method: str, scales: list[int] | None = None) -> np.ndarray:
        """One net's posteriors: multi-scale average, and for ``both`` the dense/multi-crop average."""
        per_method = []
        for m in methods_of(method):
            if not self.scales(self._net(net), m):
                raise UserError(f"net {net} ({self.nets[net].get('label', '?')}) has no {m} posteriors "
                                f"(stored: {', '.join(self.methods(net)) or 'none'})")
            per_method.append(multi_scale([self.arrays[(net, m, q)] for q in self._stored(net, m, scales)]))
        return per_method[0] if len(per_method) == 1 else combine_methods(*per_method)

    def select(self, method: str = "dense", nets: list[int] | None = None,
               scales: list[int] | None = None) -> np.ndarray:
        """Posteriors (N x C, float64) of ``method`` over ``scales``, fused over ``nets`` (default all)."""
        if method not in (*METHODS, "both"):
            raise UserError(f"unknown method {method!r} (dense, multicrop, both)")
        idx = list(range(len(self.nets))) if nets is None else list(nets)
        return fuse([self.net_posteriors(i, method, scales) for i in idx])

    def subset(self, nets: list[int] | None = None, scales: list[int] | None = None) -> Posteriors:
        """The same images restricted to some nets (renumbered in the given order) and scales."""
        idx = list(range(len(self.nets))) if nets is None else list(nets)
        for i in idx:
            for m in self.methods(self._net(i)):
                self._stored(i, m, scales)
        arrays = {(idx.index(i), m, q): a for (i, m, q), a in self.arrays.items()
                  if i in idx and (scales is None or q in scales)}
        return Posteriors(ids=self.ids, labels=self.labels, classes=self.classes, nets=[self.nets[i] for i in idx],
                          arrays=arrays, data=self.data)

    # -- files
    def save(self, path: str | os.PathLike[str], dtype: str = "float32") -> Path:
        """Write ``posteriors.npz`` atomically."""
        meta = {"format": FORMAT, "nets": self.nets, "data": self.data}
        payload: dict[str, np.ndarray] = {
            "ids": np.array(self.ids, dtype=np.str_), "labels": self.labels,
            "classes": np.array(self.classes, dtype=np.str_), "meta": np.array(json.dumps(meta, default=str)),
        }
        for (i, m, q), arr in sorted(self.arrays.items()):
            payload[f"p.net{i}.{m}.{q}"] = np.asarray(arr, dtype=dtype)
        with atomic_path(path, suffix=".npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **payload)
        return Path(path)


def posteriors_file(path: str | os.PathLike[str]) -> Path:
    """``path`` itself, or the ``posteriors.npz`` in it when it is a folder."""
    p = Path(path)
    return p / "posteriors.npz" if p.is_dir() else p


def load_posteriors(path: str | os.PathLike[str]) -> Posteriors:
    """Read a ``posteriors.npz`` (or the folder holding one) written by the evaluate stage."""
    p = posteriors_file(path)
    if not p.is_file():
        raise UserError(f"posteriors not found: {p}")
    try:
        with np.load(p, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("format") != FORMAT:
                raise UserError(f"{p}: not a {FORMAT} file")
            arrays = {}
            for name in z.files:
                mt = _KEY.match(name)
                if mt:
                    arrays[(int(mt.group(1)), mt.group(2), int(mt.group(3)))] = z[name].astype(np.float32)
            return Posteriors(ids=[str(x) for x in z["ids"]], labels=z["labels"],
                              classes=[str(x) for x in z["classes"]], nets=meta["nets"], arrays=arrays,
                              data=meta.get("data", {}))
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - a broken file is the user's to fix
        raise UserError(f"{p}: cannot read posteriors ({type(e).__name__}: {e})") from None


def merge_posteriors(parts: list[Posteriors]) -> Posteriors:
    """Put the nets of several posteriors files side by side (e.g. two separate runs, for fusion).

    Images are aligned by id; every file must hold the same images, labels and classes.
    """
    if not parts:
        raise UserError("no posteriors to merge")
    base = parts[0]
    nets: list[dict[str, Any]] = []
    arrays: dict[tuple[int, str, int], np.ndarray] = {}
    for part in parts:
        if part.classes != base.classes:
            raise UserError("cannot fuse posteriors over different class lists")
        if sorted(part.ids) != sorted(base.ids):
            raise UserError(f"cannot fuse posteriors of different images ({len(part.ids)} vs {len(base.ids)} ids, "
                            f"{len(set(part.ids) ^ set(base.ids))} differ)")
        where = {k: i for i, k in enumerate(part.ids)}
        perm = np.array([where[k] for k in base.ids]) if part.ids != base.ids else None
        labels = part.labels if perm is None else part.labels[perm]
        if not np.array_equal(labels, base.labels):
            raise UserError("cannot fuse posteriors whose labels differ")
        offset = len(nets)
        nets.extend(part.nets)
        for (i, m, q), arr in part.arrays.items():
            arrays[(offset + i, m, q)] = arr if perm is None else arr[perm]
    return Posteriors(ids=list(base.ids), labels=base.labels, classes=list(base.classes), nets=nets,
                      arrays=arrays, data=base.data)
