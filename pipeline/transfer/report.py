"""Results in the layout of the paper's Table 11 (Appendix B), and the per-image decision files.

Names are never paths: class names enter devkit file names only through
:func:`pipeline.sources.voc.file_part`, ids enter devkit lines through :func:`devkit_id`.
"""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.io import atomic_write_text
from pipeline.sources.voc import file_part

__all__ = ["method_name", "format_value", "class_values", "table11", "per_class_table", "write_csv",
           "write_voc_results", "devkit_id"]


def method_name(stores: list[dict[str, Any]]) -> str:
    """"VGG Net-D", "VGG Net-D & Net-E", or "raw pixels (32x32)": the method a result's stores describe."""
    nets = [n for s in stores for n in s.get("nets", [])]
    if nets:
        return "VGG " + " & ".join(
            f"Net-{n.get('config') or '?'}" + (f" (width {n['width']})" if n.get("width") not in (None, 1, 1.0) else "")
            for n in nets
        )
    names = []
    for s in stores:
        if s.get("descriptor") == "raw pixels":
            side = (s.get("scales") or ["?"])[0]
            names.append(f"raw pixels ({side}x{side})")
        else:
            names.append(Path(s.get("path", "?")).stem)
    return " & ".join(names)


def format_value(result: dict[str, Any]) -> str:
    """"89.3" (one evaluation) or "91.8 ± 1.0" (several splits), in percent."""
    if result.get("mean") is None or (isinstance(result["mean"], float) and np.isnan(result["mean"])):
        return "-"
    m = 100.0 * result["mean"]
    if result.get("std") is None:
        return f"{m:.1f}"
    return f"{m:.1f} ± {100.0 * result['std']:.1f}"


def class_values(classes: list[str], values: np.ndarray) -> dict[str, float | None]:
    """class -> value, None where the value is nan (a class without positive or test images)."""
    return {c: (None if np.isnan(v) else float(v)) for c, v in zip(classes, values, strict=False)}


def _column(result: dict[str, Any]) -> str:
    col = result["column"]
    if "{dataset}" in col:
        data = (result.get("stores") or [{}])[0].get("data", {}) or {}
        col = col.format(dataset=Path(str(data.get("path") or "generic")).name)
    return col


def table11(results: list[dict[str, Any]]) -> str:
    """Markdown table in the layout of Table 11: methods as rows, datasets as columns."""
    cols: list[str] = []
    rows: dict[str, dict[str, str]] = {}
    for r in results:
        col = _column(r)
        if col not in cols:
            cols.append(col)
        rows.setdefault(r.get("method") or method_name(r.get("stores", [])), {})[col] = format_value(r)
    lines = ["| Method | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for name, vals in rows.items():
        lines.append(f"| {name} | " + " | ".join(vals.get(c, "-") for c in cols) + " |")
    return "\n".join(lines) + "\n"


def per_class_table(result: dict[str, Any], what: str) -> str:
    """Markdown table of the per-class values (``what``: AP or recall, in percent) of one result."""
    lines = [f"| class | {what} (%) |", "|---|---|"]
    for name, v in result["per_class"].items():
        lines.append(f"| {name} | " + ("-" if v is None else f"{100.0 * v:.1f}") + " |")
    return "\n".join(lines) + "\n"


def write_csv(path: str | os.PathLike[str], header: list[str], rows: list[list[Any]]) -> None:
    """A CSV file, atomically (floats with 9 significant digits: enough to recompute any metric)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in rows:
        w.writerow([f"{x:.9g}" if isinstance(x, (float, np.floating)) else x for x in row])
    atomic_write_text(path, buf.getvalue())


_ID_UNSAFE = re.compile(r"[\s%\x00-\x1f\x7f]")


def devkit_id(key: str) -> str:
    """An image id as a field of a devkit line: whitespace, control characters and ``%`` percent-encoded."""
    return _ID_UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode("utf-8")), key)


def write_voc_results(folder: str | os.PathLike[str], ids: list[str], classes: list[str],
                      scores: np.ndarray) -> dict[str, str]:
    """The devkit's submission files ``comp1_cls_test_<class>.txt`` ("<id> <score>" per line), so the
    official ``VOCevalcls.m`` can score them; images without a score are left out (the devkit gives
    them ``-inf``). Returns class -> file name (see :func:`file_part`)."""
    folder = Path(folder)
    names = {name: f"comp1_cls_test_{file_part(name)}.txt" for name in classes}
    fields = [devkit_id(str(i)) for i in ids]
    for c, name in enumerate(classes):
        lines = [f"{i} {s:.9g}\n" for i, s in zip(fields, scores[:, c], strict=False) if not np.isnan(s)]
        atomic_write_text(folder / names[name], "".join(lines))
    return names
