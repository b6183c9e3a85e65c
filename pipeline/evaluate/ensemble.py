"""Table 6 (paper 4.4, ConvNet fusion: soft-max posteriors averaged) rebuilt from saved evaluation runs: their
``posteriors.npz`` merged (images aligned by id), one row per group of nets and method; docs/evaluation.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from pipeline.config import StageConfig
from pipeline.errors import UserError
from pipeline.evaluate.posteriors import Posteriors, load_posteriors, merge_posteriors
from pipeline.evaluate.protocols import METHOD_NAMES, METHODS, methods_of
from pipeline.evaluate.tables import errors_pct, net_label
from pipeline.io import atomic_write_text

__all__ = ["EnsembleConfig", "run_ensemble", "ensemble_rows", "ensemble_markdown"]

Method = Literal["dense", "multicrop", "both"]


class EnsembleConfig(StageConfig):
    """Which saved runs to fuse, in which groups, by which methods (paper Table 6)."""

    runs: list[str] = Field(..., min_length=1, description="evaluate output folders or posteriors.npz files")
    groups: list[list[int]] | None = Field(None, description="nets fused per row, as indices into the runs' nets in "
                                                             "order (default: one group of all nets)")
    methods: list[Method] | None = Field(None, description="dense, multicrop, both (default: every method stored "
                                                           "for all nets of a group; both when both are)")
    out: str | None = Field(None, description="write the table as Markdown to this file")


def _methods_of(post: Posteriors, group: list[int], wanted: list[str] | None) -> list[str]:
    common = [m for m in METHODS if all(post.scales(i, m) for i in group)]
    if wanted is None:
        return common + (["both"] if len(common) == len(METHODS) else [])
    for m in wanted:
        lacking = [(i, n) for i in group for n in methods_of(m) if not post.scales(i, n)]
        if lacking:
            i, n = lacking[0]
            raise UserError(f"method {m}: net {i} ({post.nets[i].get('label', '?')}) has no {n} posteriors")
    return list(wanted)


def ensemble_rows(post: Posteriors, groups: list[list[int]] | None = None,
                  methods: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per (group of nets, method): ``models``, ``nets``, ``method``, errors in % and ``n_images``."""
    groups = groups or [list(range(len(post.nets)))]
    keep = post.labels >= 0
    if not keep.any():
        raise UserError("these posteriors have no labelled images: no error to report")
    labels = post.labels[keep]
    rows = []
    for group in groups:
        bad = [i for i in group if not 0 <= i < len(post.nets)]
        if not group or bad:
            raise UserError(f"group {group}: nets are numbered 0..{len(post.nets) - 1} over the runs, in order")
        for m in _methods_of(post, group, methods):
            scores = post.select(m, nets=group)[keep]
            names = ", ".join(net_label(post.nets[i], post.scales(i, "dense" if m == "both" else m)) for i in group)
            rows.append({"models": names, "nets": list(group), "method": METHOD_NAMES[m],
                         **errors_pct(scores, labels)})
    return rows


def ensemble_markdown(rows: list[dict[str, Any]]) -> str:
    """Table 6's layout: combined models (with their method), top-1 and top-5 validation error."""
    lines = ["**Table 6: Multiple ConvNet fusion results**", "",
             "| Combined ConvNet models | method | top-1 val. error (%) | top-5 val. error (%) | images |",
             "|---|---|---:|---:|---:|"]
    lines += [f"| {r['models']} | {r['method']} | {r['top1_error_pct']:.1f} | {r['top5_error_pct']:.1f} | "
              f"{r['n_images']} |" for r in rows]
    return "\n".join(lines) + "\n"


def run_ensemble(cfg: EnsembleConfig) -> dict[str, Any]:
    """Fuse the nets of saved evaluation runs (paper 4.4): ``rows`` (:func:`ensemble_rows`), ``nets`` (label, train
    scale, run of each net, in index order), ``runs``, ``markdown`` and ``out`` (the written file, or None)."""
    parts = [load_posteriors(r) for r in cfg.runs]
    post = merge_posteriors(parts)
    rows = ensemble_rows(post, cfg.groups, list(cfg.methods) if cfg.methods else None)
    md = ensemble_markdown(rows)
    nets = []
    for run, part in zip(cfg.runs, parts, strict=False):
        nets += [{"index": len(nets) + k, "label": n.get("label"), "train_scale": n.get("train_scale"), "run": run}
                 for k, n in enumerate(part.nets)]
    if cfg.out:
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cfg.out, md)
    return {"rows": rows, "nets": nets, "runs": list(cfg.runs), "markdown": md, "out": cfg.out}
