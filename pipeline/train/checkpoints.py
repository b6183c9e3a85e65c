"""The files of a training run (paper 3.1): ``checkpoints/last.pt`` (full state), ``best.pt``, ``metrics.jsonl``,
``config.yaml``; the identity a ``last.pt`` records for resuming. docs/training.md describes what they hold.
"""

from __future__ import annotations

import json
import os
from collections.abc import Set
from pathlib import Path
from typing import Any

from pipeline.io import atomic_write_text

__all__ = ["RunPaths", "run_identity", "truncate_metrics", "val_rows", "clean_stale_tmp"]


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


def run_identity(recorded: dict[str, Any], recorded_data: str | None, config: dict[str, Any], data: str,
                 free: Set[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the identity ``last.pt`` records, this run's) for :func:`pipeline.reuse.check_reusable`: the recorded
    config's keys outside ``free`` (a key it lacks is a field added to the config after ``last.pt`` was
    written: the run used the behaviour its default keeps, so it is not compared) and the data fingerprint."""
    fa, fb = _flatten(json.loads(json.dumps(recorded))), _flatten(json.loads(json.dumps(config)))
    keys = [k for k in sorted(fa) if k not in free]
    return ({"config": {k: fa[k] for k in keys}, "data": recorded_data},
            {"config": {k: fb.get(k) for k in keys}, "data": data})


def _rows(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """The rows of a ``metrics.jsonl`` with their lines (none when it is absent; a line cut by kill -9 is left out)."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
        try:
            rows.append((line, json.loads(line)))
        except ValueError:
            continue
    return rows


def val_rows(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The validation rows of a ``metrics.jsonl``."""
    return [r for _, r in _rows(Path(path)) if r.get("kind") == "val" and "top1" in r]


def truncate_metrics(path: Path, step: int, epoch: int) -> None:
    """Keep only the metrics rows up to ``step`` and ``epoch`` (rows logged after the resumed checkpoint go)."""
    if path.is_file():
        atomic_write_text(path, "".join(line + "\n" for line, r in _rows(path)
                                        if r.get("step", 0) <= step and r.get("epoch", 0) <= epoch))
