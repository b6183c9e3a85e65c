"""``results.json`` of the end-to-end demo: every number of its printed tables (paper Tables 3-6, 8-9, 11)
in one file, in percent; its fields: docs/formats.md 7."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pipeline.io import atomic_write_json

__all__ = ["paper_results", "write_results", "FORMAT"]

FORMAT = "vgg-demo-results/1"


def _d(x: Any) -> dict[str, Any] | None:
    """A stage summary as a dict (dicts as they are; pydantic results through ``model_dump``)."""
    if x is None:
        return None
    return x.model_dump(mode="json") if hasattr(x, "model_dump") else dict(x)


def _pct(x: float | None) -> float | None:
    return None if x is None else round(100.0 * float(x), 2)


def _classification(ev: dict[str, Any] | None) -> list[dict[str, Any]]:
    rows = (ev or {}).get("rows") or []
    return [{"net": r.get("config"), "train_scale": r.get("train_S"), "test_scales": r.get("test_Q"),
             "method": r.get("method"), "top1_error": r.get("top1_error_pct"), "top5_error": r.get("top5_error_pct"),
             "images": r.get("n_images")} for r in rows]


def _transfer(caltech: dict | None, caltech_px: dict | None, voc: dict | None, voc_px: dict | None) -> dict[str, Any]:
    def g(r: dict | None, k: str) -> float | None:
        return _pct(r.get(k)) if r else None

    return {"caltech": {"mean": g(caltech, "mean"), "std": g(caltech, "std"),
                        "pixels_mean": g(caltech_px, "mean"), "pixels_std": g(caltech_px, "std")},
            "voc07": {"map": g(voc, "mean"), "pixels_map": g(voc_px, "mean")}}


def _baselines(rows: list[dict[str, Any]], key: str) -> dict[str, float | None]:
    by = {r["name"]: r for r in rows}
    return {"whole_image": _pct(by.get("whole image", {}).get(key)),
            "centre": _pct(by.get("centre quarter", {}).get(key))}


def _loc_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        row = {k: v for k, v in r.items() if k not in ("error", "error_top1")}
        row["error"] = _pct(r["error"])
        if "error_top1" in r:
            row["top1_error"] = _pct(r["error_top1"])
        out.append(row)
    return out


def _localisation(crop: dict | None, dense: dict | None) -> dict[str, Any]:
    out: dict[str, Any] = {"crop": None, "dense": None}
    if crop:
        rows = crop["rows"]
        nets = [r for r in rows if r["name"].startswith("net")]
        paper = [r for r in nets if r["regression"] == "PCR" and r["fine_tuned"] == "all"]
        chosen = (paper or nets or [{}])[0]
        out["crop"] = {"error": _pct(chosen.get("error")), "net": chosen.get("name"),
                       "baselines": _baselines(rows, "error"), "rows": _loc_rows(rows), "images": crop.get("images")}
    if dense:
        rows = dense["rows"]
        by = {r["name"]: r for r in rows}
        chosen = by.get("fusion") or by.get("net0") or {}
        out["dense"] = {"top5_error": _pct(chosen.get("error")), "top1_error": _pct(chosen.get("error_top1")),
                        "net": chosen.get("name"), "top_k": dense.get("top_k"),
                        "baselines": _baselines(rows, "error"), "baselines_top1": _baselines(rows, "error_top1"),
                        "classification_error": _pct(dense.get("classification_error")),
                        "rows": _loc_rows(rows), "images": dense.get("images")}
    return out


def paper_results(evaluate: Any = None, caltech: Any = None, caltech_pixels: Any = None, voc07: Any = None,
                  voc07_pixels: Any = None, loc_crop: Any = None, loc_dense: Any = None,
                  training_seconds: dict[str, float] | None = None, seconds: float | None = None) -> dict[str, Any]:
    """The ``results.json`` document from the stages' summaries (``evaluate``: Tables 3-6; the transfer
    summaries of the deep and raw-pixel features; ``loc_*``: Tables 8-9), the nets' and the run's wall times."""
    ev, ct, ctp, vo, vop, lc, ld = (_d(x) for x in (evaluate, caltech, caltech_pixels, voc07, voc07_pixels,
                                                   loc_crop, loc_dense))
    return {"format": FORMAT, "units": "percent", "classification": _classification(ev),
            "transfer": _transfer(ct, ctp, vo, vop), "localisation": _localisation(lc, ld),
            "training": {k: round(float(v), 1) for k, v in (training_seconds or {}).items()},
            "seconds": None if seconds is None else round(float(seconds), 1)}


def write_results(path: str | os.PathLike[str], results: dict[str, Any]) -> Path:
    """Write ``results.json`` atomically."""
    atomic_write_json(path, results)
    return Path(path)
