"""Rows and Markdown tables of the localisation evaluation (paper Appendix A.2, Tables 8 and 9; docs/formats.md 4.9),
each ending with the baselines and a line counting the images.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BASELINES", "crop_rows", "dense_rows", "crop_table", "dense_table", "images_line"]

BASELINES = ("whole image", "centre quarter")


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _scales(qs: list[int]) -> str:
    return ",".join(str(q) for q in qs)


def crop_rows(net_infos: list[dict], mean: dict[str, float]) -> list[dict[str, Any]]:
    """Table 8 rows: each net, then the baselines."""
    rows = [{"name": f"net{i}", "fine_tuned": "all" if info["fine_tune"] == "all" else "1st and 2nd FC",
             "regression": info["head"].upper(), "scale": info["scales"][0], "error": mean[f"net{i}"]}
            for i, info in enumerate(net_infos)]
    return rows + [{"name": b, "fine_tuned": "-", "regression": f"{b} (baseline)", "error": mean[b]} for b in BASELINES]


def dense_rows(net_infos: list[dict], mean: dict[str, float], mean1: dict[str, float], k: int,
               fusion: list[int] | None = None) -> list[dict[str, Any]]:
    """Table 9 rows: each net densely, the fusion, each net's central crop, then the baselines."""
    rows: list[dict[str, Any]] = []
    kinds = {(info["head"], info["fine_tune"]) for info in net_infos}

    def train(info: dict) -> str:  # nets of several kinds: say which (PCR, all layers / FC layers)
        kind = f" ({info['head'].upper()}, {'all' if info['fine_tune'] == 'all' else 'FC'})" if len(kinds) > 1 else ""
        return f"{info['train_scale']}{kind}"

    for i, info in enumerate(net_infos):
        rows.append({"name": f"net{i}", "train": train(info), "test": _scales(info["scales"]),
                     "error": mean[f"net{i}"], "error_top1": mean1[f"net{i}"]})
    if "fusion" in mean:
        members = fusion or range(len(net_infos))
        parts = " and ".join(f"{train(net_infos[i])}/{_scales(net_infos[i]['scales'])}" for i in members)
        rows.append({"name": "fusion", "train": f"fusion: {parts}", "test": "", "error": mean["fusion"],
                     "error_top1": mean1["fusion"]})
    for i, info in enumerate(net_infos):
        name = f"net{i} crop"
        if name in mean:
            rows.append({"name": name, "train": f"{train(info)}, central crop (Table 8's protocol, "
                                                f"top-{k} classes)", "test": str(info["scales"][0]),
                         "error": mean[name], "error_top1": mean1[name]})
    for b in BASELINES:
        rows.append({"name": b, "train": f"{b} (baseline, same top-{k} classes)", "test": "",
                     "error": mean[b], "error_top1": mean1[b]})
    return rows


def images_line(images: dict[str, int]) -> str:
    """One line: images in the localisation error, blacklisted images left out, skipped images."""
    line = f"{images['localisation']} images in the localisation error"
    if images.get("blacklisted"):
        line += f" ({images['blacklisted']} blacklisted images left out of it; classification: {images['evaluated']})"
    if images.get("skipped"):
        line += f"; {images['skipped']} skipped"
    return line + "."


def _markdown(title: str, header: list[str], cells: list[list[str]], foot: str) -> str:
    lines = [title, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in cells] + ["", foot]) + "\n"


def crop_table(rows: list[dict], split: str, images: dict[str, int]) -> str:
    """Table 8 in Markdown."""
    return _markdown("Localisation error, central crop and ground-truth class (Table 8 format)",
                     ["Fine-tuned layers", "regression type", f"GT class localisation error (%), {split}"],
                     [[r["fine_tuned"], r["regression"], _pct(r["error"])] for r in rows], images_line(images))


def dense_table(rows: list[dict], split: str, k: int, images: dict[str, int], classes_from: str) -> str:
    """Table 9 in Markdown."""
    return _markdown("Localisation error, dense application and greedy merging (Table 9 format)",
                     ["train (S)", "test (Q)", f"top-{k} localisation error (%), {split}", "top-1 (%)"],
                     [[r["train"], r["test"], _pct(r["error"]), _pct(r["error_top1"])] for r in rows],
                     f"Top-{k} classes from {classes_from}. " + images_line(images))
