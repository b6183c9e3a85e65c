"""Result tables in the paper's format (Tables 3-6): per net, method and test scales, top-1 / top-5 error (%),
and the fusion of several nets, recomputed from saved posteriors."""

from __future__ import annotations

import csv
import io
from typing import Any

import numpy as np

from pipeline.evaluate.metrics import topk_error
from pipeline.evaluate.posteriors import Posteriors
from pipeline.evaluate.protocols import METHOD_NAMES, METHODS

__all__ = ["format_train_scale", "net_label", "errors_pct", "build_rows", "to_markdown", "to_csv",
           "COLUMNS"]

COLUMNS = ("config", "train_S", "test_Q", "method", "top1_error_pct", "top5_error_pct", "n_images")
HEADERS = ("ConvNet config.", "train (S)", "test (Q)", "method", "top-1 val. error (%)", "top-5 val. error (%)",
           "images")


def format_train_scale(train_scale: dict[str, int] | None) -> str:
    """``256`` for fixed S, ``[256;512]`` for jittered S, ``-`` when unknown (as in the paper)."""
    if not train_scale:
        return "-"
    lo, hi = int(train_scale["s_min"]), int(train_scale["s_max"])
    return str(lo) if lo == hi else f"[{lo};{hi}]"


def net_label(net: dict[str, Any], scales: list[int]) -> str:
    """The paper's Table 6 name of a net: ``(D/[256;512]/256,384,512)``."""
    return f"({net.get('label', '?')}/{format_train_scale(net.get('train_scale'))}/{','.join(map(str, scales))})"


def errors_pct(scores: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """A row's top-1 and top-5 error (%, two decimals) and image count."""
    return {"top1_error_pct": round(100 * topk_error(scores, labels, 1), 2),
            "top5_error_pct": round(100 * topk_error(scores, labels, min(5, scores.shape[1])), 2),
            "n_images": int(len(labels))}


def _row(config: str, train_s: str, scales: list[int], method: str, scores: np.ndarray, labels: np.ndarray) -> dict:
    return {"config": config, "train_S": train_s, "test_Q": ",".join(map(str, scales)),
            "method": METHOD_NAMES[method], **errors_pct(scores, labels)}


def build_rows(post: Posteriors, methods: list[str], single_scale_rows: bool = True) -> list[dict]:
    """Rows (keys :data:`COLUMNS`, errors in %, unlabelled images left out) for every net: per Q (with
    ``single_scale_rows``, Table 3), multi-scale per method (Table 4), combined when ``methods`` holds both
    (Table 5); and for several nets their fusion (Table 6)."""
    keep = post.labels >= 0
    labels = post.labels[keep]
    rows: list[dict] = []
    for i, net in enumerate(post.nets):
        label, train_s = str(net.get("label", i)), format_train_scale(net.get("train_scale"))
        for m in (m for m in METHODS if m in methods):
            qs = post.scales(i, m)
            if single_scale_rows and len(qs) > 1:
                for q in qs:
                    rows.append(_row(label, train_s, [q], m, post.arrays[(i, m, q)][keep], labels))
            rows.append(_row(label, train_s, qs, m, post.net_posteriors(i, m)[keep], labels))
        if all(m in methods for m in METHODS):
            rows.append(_row(label, train_s, post.scales(i, "dense"), "both", post.net_posteriors(i, "both")[keep],
                             labels))
    if len(post.nets) > 1:
        wanted = [m for m in METHODS if m in methods] + (["both"] if all(m in methods for m in METHODS) else [])
        for m in wanted:
            names = ", ".join(net_label(n, post.scales(i, "dense" if m == "both" else m))
                              for i, n in enumerate(post.nets))
            rows.append({**_row(names, "-", [], m, post.select(m)[keep], labels), "test_Q": "-"})
    return rows


def to_markdown(rows: list[dict], title: str | None = None) -> str:
    """A Markdown table of the rows (paper column names)."""
    lines = [*([f"**{title}**", ""] if title else []), "| " + " | ".join(HEADERS) + " |",
             "|" + "|".join(["---"] * 4 + ["---:"] * 3) + "|"]
    lines += [f"| {r['config']} | {r['train_S']} | {r['test_Q']} | {r['method']} | {r['top1_error_pct']:.1f} | "
              f"{r['top5_error_pct']:.1f} | {r['n_images']} |" for r in rows]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict]) -> str:
    """The rows as CSV with the :data:`COLUMNS` header."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()
