"""The files of a training run: ``checkpoints/last.pt`` (full state), ``best.pt``, ``metrics.jsonl``, ``config.yaml``.

Checkpoints are written atomically with :func:`pipeline.models.save_checkpoint` (by the training
engine, :mod:`pipeline.train.engine`), so a run killed at any moment (kill -9) leaves the previous
complete checkpoint. ``meta`` carries what evaluation needs (normalisation, training scale,
classes, dataset fingerprint, the resolved config); a classification ``last.pt`` adds the
optimizer, the plateau schedule, the epoch/step position inside the epoch and the RNG state. The
data position is exact (see :mod:`pipeline.train.loader`); augmentation and dropout are drawn from
generators seeded by (seed, epoch, sample key) and (seed, rank, step), so no generator state has
to be carried between ranks.

Each checkpoint records the sha256 of its tensors, verified whenever it is loaded (resume
included). A run killed while writing leaves a temporary ``.last.pt.*.tmp`` / ``.best.pt.*.tmp``
beside the checkpoints; :func:`clean_stale_tmp` removes them when the next run starts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pipeline.io import atomic_write_text
from pipeline.train.config import RESUME_FREE

__all__ = ["RunPaths", "config_differences", "truncate_metrics", "clean_stale_tmp"]


class RunPaths:
    """The files of one training run under ``out``."""

    def __init__(self, out: str | os.PathLike[str]) -> None:
        self.out = Path(out)
        self.ckpt_dir = self.out / "checkpoints"
        self.last = self.ckpt_dir / "last.pt"
        self.best = self.ckpt_dir / "best.pt"
        self.metrics = self.out / "metrics.jsonl"
        self.config = self.out / "config.yaml"


def clean_stale_tmp(paths: RunPaths) -> list[Path]:
    """Remove the temporary files a killed run left while writing ``last.pt`` / ``best.pt``; returns them.

    Call it before this run writes any checkpoint (one writer per run folder: the main rank).
    """
    if not paths.ckpt_dir.is_dir():
        return []
    stale = [p for name in (paths.last.name, paths.best.name) for p in paths.ckpt_dir.glob(f".{name}.*.tmp")
             if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_differences(a: dict[str, Any], b: dict[str, Any], free: set[str] = RESUME_FREE) -> list[str]:
    """Dotted keys whose values differ between a recorded config ``a`` and a resolved config ``b`` (``free`` ignored).

    A key ``a`` lacks is a field added to the config after ``a`` was written: the run was made with
    the behaviour that field's default keeps, so it is not a difference.
    """
    fa, fb = _flatten(json.loads(json.dumps(a))), _flatten(json.loads(json.dumps(b)))
    return [k for k in sorted(fa) if k not in free and fa[k] != fb.get(k)]


def truncate_metrics(path: Path, step: int, epoch: int) -> None:
    """Keep only the metrics rows up to ``step`` and ``epoch`` (rows logged after the resumed checkpoint go)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut by kill -9
            continue
        if row.get("step", 0) <= step and row.get("epoch", 0) <= epoch:
            keep.append(line)
    atomic_write_text(path, "".join(x + "\n" for x in keep))
