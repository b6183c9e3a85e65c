"""The reproduction's report: ``results.json``, ``report.md`` and ``figures/*.png`` from the finished steps.

``results.json`` holds every number (errors in percent); ``report.md`` is rendered from it alone
(:func:`render_report`): the decision rule first, then the paper's tables with the paper's numbers
beside ours. :func:`publish` copies a run into ``docs/`` and renders its report there, keeping the
notes a person wrote between the ``notes`` markers (the reasons behind a verdict).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from pipeline.io import atomic_path, atomic_write_json, atomic_write_text
from pipeline.models import NETS
from pipeline.reproduce.findings import RULE
from pipeline.reproduce.plan import EXPERIMENTS, RUNS, S_FIXED, S_JITTER, Budget, run_by_id
from pipeline.reproduce.tables import build_tables, metrics_rows

__all__ = ["write_report", "render_report", "render_tables", "publish", "republish", "TABLE_COLUMNS"]

#: (results.json table key, title, columns shown)
TABLE_COLUMNS: list[tuple[str, str, list[str]]] = [
    ("table3", "Table 3: single test scale (dense); epochs trained and the epochs after which the lr was divided",
     ["id", "train_S", "test_Q", "top1_error", "top1_se", "top5_error", "paper_top1", "paper_top5", "epochs",
      "lr_drops_after"]),
    ("table4", "Table 4: multiple test scales (dense)",
     ["id", "train_S", "test_Q", "top1_error", "top1_se", "top5_error", "paper_top1", "paper_top5"]),
    ("scales", "Table 4 by test scale: the dense top-1 error at each Q (the points of the error-vs-scale figure)",
     ["id", "Q", "top1_error"]),
    ("table5", "Table 5: dense vs multi-crop vs both (jittered S, multi-scale Q)",
     ["id", "top1_error", "top1_se", "top5_error", "paper_top1", "paper_top5"]),
    ("table6", "Table 6: fusion of D and E (jittered S, multi-scale Q)",
     ["id", "nets", "top1_error", "top1_se", "top5_error", "paper_top1", "paper_top5"]),
    ("table8", "Table 8: localisation error, central crop, ground-truth class", ["id", "error", "se", "paper"]),
    ("table9", "Table 9: localisation error, dense protocol, top-5 classes", ["id", "error"]),
    ("repeats", "Spread over training seeds (single test scale; `--seeds N`; findings use seed 0)",
     ["id", "seeds", "top1_errors", "mean", "std"]),
    ("table11", "Table 11: transfer (Caltech-101 protocol: mean class recall %; VOC-2007 protocol: mAP %)",
     ["id", "scales", "caltech", "caltech_std", "voc07", "paper_caltech", "paper_voc07"]),
]


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def render_tables(tables: dict[str, list[dict[str, Any]]]) -> str:
    """The tables as Markdown (numbers with two decimals, exactly as results.json holds them)."""
    parts = []
    for key, title, cols in TABLE_COLUMNS:
        rows = tables.get(key) or []
        if not rows:
            parts.append(f"### {title}\n\nnot run\n")
            continue
        lines = [f"### {title}\n", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(_cell(r.get(c)) for c in cols) + " |" for r in rows]
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def _findings_md(findings: list[dict[str, Any]]) -> str:
    mark = {True: "reproduced", False: "**not reproduced**", None: "not run"}
    lines = ["| finding | paper table | the paper's claim | ours | verdict |", "|---|---|---|---|---|"]
    lines += [f"| {f['id']} | {f['table']} | {f['paper']} | {f['ours'] or '-'} | {mark[f['reproduced']]} |"
              for f in findings]
    notes = [f"- **{f['id']}**: {f['note']}" for f in findings if f["note"]]
    return "\n".join(lines) + "\n\nDifferences (paper's ordering positive) and their standard errors:\n\n" + \
        "\n".join(notes) + "\n"


def _runs(w: Path, records: dict[str, dict[str, Any]], tables: dict[str, list], quick: bool) -> list[dict]:
    t3 = {r["id"]: r for r in [*tables.get("table3", []), *tables.get("repeat_runs", [])]}
    rel = os.path.relpath(w, Path.cwd())
    where = rel if not rel.startswith("..") else str(w)
    out = []
    for run in [*RUNS, *(run_by_id(r["id"]) for r in tables.get("repeat_runs", []))]:
        rec = records.get(run.id)
        if rec is None:
            continue
        out.append({"id": run.id, "config": os.path.relpath(rec["config"], w),
                    "command": f"vgg reproduce {'--quick ' if quick else ''}--only {run.base}"
                               + (f" --seeds {run.seed + 1}" if run.seed else "") + f" --workdir {where}",
                    "seed": run.seed, "net": run.net, "train_scale": list(run.scale), "init_from": run.init_from,
                    "top1_error": t3[run.id]["top1_error"], "top1_se": t3[run.id]["top1_se"],
                    "top5_error": t3[run.id]["top5_error"], "epochs": rec["epochs"], "stop": rec["stop"],
                    "seconds": round(rec["train_seconds"], 1), "device": rec["device"],
                    "val_top1_error_best": None if rec["val_top1_best"] is None
                    else round(100 * (1 - rec["val_top1_best"]), 2)})
    return out


def _figures(w: Path, records: dict[str, dict[str, Any]], tables: dict[str, list]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_dir = w / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    made: list[str] = []

    def save(fig: Any, name: str) -> None:
        with atomic_path(fig_dir / name) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        made.append(str(fig_dir / name))

    runs = [r for r in RUNS if r.id in records]
    if runs:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for r in runs:
            rows = metrics_rows(records[r.id]["metrics"])
            ax.plot([x["epoch"] for x in rows], [x["top1_error"] for x in rows], marker=".", label=r.id)
        ax.set(xlabel="epoch", ylabel="val. top-1 error (%)", title="Validation error during training")
        ax.legend(fontsize=7, ncol=2)
        save(fig, "val_error_vs_epoch.png")
        t3 = {x["id"]: x for x in tables["table3"]}
        fig, ax = plt.subplots(figsize=(6, 4))
        for kind, scale in (("fixed", S_FIXED), ("jitter", S_JITTER)):
            pts = sorted((NETS[r.net].weight_layers, t3[r.id]["top1_error"], r.net, t3[r.id]["top1_se"]) for r in runs
                         if r.scale == scale)
            if pts:
                ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[2 * p[3] for p in pts], marker="o",
                            linestyle="", capsize=3, label=f"{kind} S (bars: 2 SE)")
                for x, y, name, _ in pts:
                    ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set(xlabel="weight layers", ylabel="test top-1 error (%)", title="Error vs depth (single test scale)")
        ax.legend()
        save(fig, "error_vs_depth.png")
        fig, ax = plt.subplots(figsize=(6, 4))
        for r in runs:
            pts = [x for x in tables["scales"] if x["id"] == r.id]
            ax.plot([p["Q"] for p in pts], [p["top1_error"] for p in pts], marker="o", label=r.id)
        ax.set(xlabel="test scale Q", ylabel="test top-1 error (%)", title="Error vs test scale (dense)")
        ax.legend(fontsize=7, ncol=2)
        save(fig, "error_vs_test_scale.png")
    if tables.get("table11"):
        rows = tables["table11"]
        fig, ax = plt.subplots(figsize=(7, 4))
        xs = range(len(rows))
        ax.bar([x - 0.2 for x in xs], [r["caltech"] for r in rows], width=0.4, label="Caltech-style (recall %)")
        ax.bar([x + 0.2 for x in xs], [r["voc07"] for r in rows], width=0.4, label="VOC-style (mAP %)")
        ax.set_xticks(list(xs), [r["id"] for r in rows], fontsize=8)
        ax.set(ylabel="%", title="Transfer: deep features vs raw pixels")
        ax.legend()
        save(fig, "transfer_deep_vs_pixels.png")
    return made


def _compute_seconds(rec: dict[str, Any]) -> float:
    """A step's compute time: a run's training time over all its sittings plus its test evaluation."""
    if "train_seconds" in rec:
        return float(rec["train_seconds"]) + float(rec.get("test_seconds", 0.0))
    return float(rec.get("seconds", 0.0))


def _setup(results: dict[str, Any]) -> str:
    b, setup = results["budget"], results["setup"]
    pending, steps = setup["pending"], setup["steps"]
    status = (f"**Status: {steps - len(pending)} of {steps} steps finished; pending: {', '.join(pending)}.** "
              "Tables and findings below cover the finished steps only; the same command continues the run.\n\n"
              if pending else "")
    return status + (
        f"Budget: {'quick (a smoke test of the graph; its numbers mean nothing)' if results['quick'] else 'full'}. "
        f"Data: Fashion-MNIST from `data/` — {b['train_per_class']} training and {b['val_per_class']} "
        f"validation images per class from the official training file (the validation split drives only the "
        f"plateau schedule), test: {b['test_per_class'] or 'all 1000'} per class of the official test file, never "
        f"seen in training. Nets: the paper's configurations at a quarter of the widths, FC 256, 32-pixel crops; "
        f"the paper's sizes divided by 7 (S = 256 -> {S_FIXED[0]}, S in [256, 512] -> [{S_JITTER[0]}, "
        f"{S_JITTER[1]}]); epochs of {b['epoch_images']} images, at most {b['max_epochs']}, lr / 10 after "
        f"{b['patience']} epoch(s) without val. improvement, stop after {b['lr_drops']} drops. Deeper nets start "
        f"from A (paper 3.1). Multi-crop: {b['multicrop_grid']}x{b['multicrop_grid']} crops x 2 flips per scale. "
        f"Shards: `<workdir>/{setup['shards']}`. Device: {'; '.join(setup['devices']) or '-'}. "
        f"Compute time of the finished steps: {results['seconds'] / 60:.1f} min.\n")


NOTES_BEGIN, NOTES_END = "<!-- notes:begin -->", "<!-- notes:end -->"
README_BEGIN, README_END = "<!-- reproduction:begin -->", "<!-- reproduction:end -->"
#: the first lines of a published report: where it comes from
SOURCE = ("Rendered from `{dest}/results.json` by `vgg reproduce --report-only --workdir WORKDIR --publish {dest}` "
          "(WORKDIR: the run's), or from the results alone by `python -m pipeline.reproduce.report {dest}`; the "
          "notes between the `notes` markers are written by hand after the numbers and kept.")


def render_report(results: dict[str, Any], notes: str | None = None, source: str = "",
                  figures: str = "figures") -> str:
    """report.md from a results.json: ``notes`` (a published report's hand-written block, markers included)
    after the findings, ``source`` under the title, figure links under ``figures``."""
    figs = "\n".join(f"![{Path(f).stem}]({figures}/{Path(f).name})" for f in results["figures"])
    return (f"# VGG reproduction at small scale ({'quick' if results['quick'] else 'full'} run)\n\n"
            + (f"{source}\n\n" if source else "") + "## Setup\n\n" + _setup(results)
            + "\n## Decision rule (fixed before the run)\n\n" + RULE + "\n\n## Findings\n\n"
            + _findings_md(results["findings"]) + (f"\n{notes}\n" if notes else "")
            + "\n## Tables (errors in %, ours beside the paper's)\n\n" + render_tables(results["tables"])
            + "\n## Figures\n\n" + figs + "\n")


def write_report(w: Path, book: Any, budget: Budget, *, quick: bool, data: dict[str, Any]) -> dict[str, Any]:
    """Write results.json, report.md and the figures of every finished step in ``w``."""
    records = {p.stem: book.get(p.stem) for p in sorted(book.folder.glob("*.json"))}
    tables, findings = build_tables(records)
    figures = _figures(w, records, tables)
    steps = [*(r.id for r in RUNS), *EXPERIMENTS]
    setup = {"devices": sorted({r["device"] for r in records.values() if "device" in r}),
             "shards": os.path.relpath(data["shards"], w), "steps": len(steps),
             "pending": [s for s in steps if s not in records]}
    results = {"units": "percent", "quick": quick, "budget": budget.model_dump(mode="json"), "setup": setup,
               "runs": _runs(w, records, tables, quick), "findings": findings, "tables": tables,
               "figures": [os.path.relpath(f, w) for f in figures],
               "seconds": round(sum(_compute_seconds(r) for r in records.values()), 1)}
    atomic_write_json(w / "results.json", results)
    atomic_write_text(w / "report.md", render_report(results))
    return {"report": str(w / "report.md"), "results": str(w / "results.json"), "figures": figures}


def publish(w: Path, dest: Path) -> list[str]:
    """Copy results.json, the figures and each run's config into ``dest``/, and render ``dest``.md from them."""
    (dest / "figures").mkdir(parents=True, exist_ok=True)
    (dest / "configs").mkdir(exist_ok=True)
    written = []
    for f in sorted((w / "figures").glob("*.png")):
        shutil.copyfile(f, dest / "figures" / f.name)
        written.append(str(dest / "figures" / f.name))
    results = json.loads((w / "results.json").read_text())
    for run in results["runs"]:  # each run's resolved training config travels with the results
        shutil.copyfile(w / run["config"], dest / "configs" / f"{run['id']}.yaml")
        run["config"] = f"configs/{run['id']}.yaml"
        written.append(str(dest / run["config"]))
    atomic_write_json(dest / "results.json", results)
    return [*republish(dest), str(dest / "results.json"), *written]


def republish(dest: Path) -> list[str]:
    """Render ``dest``.md from ``dest``/results.json (its notes kept) and the README block beside it."""
    md = dest.with_suffix(".md")
    old = md.read_text() if md.is_file() else ""
    notes = (NOTES_BEGIN + old.split(NOTES_BEGIN, 1)[1].split(NOTES_END, 1)[0] + NOTES_END
             if NOTES_BEGIN in old else f"{NOTES_BEGIN}\n{NOTES_END}")
    text = render_report(json.loads((dest / "results.json").read_text()), notes,
                         SOURCE.format(dest=f"docs/{dest.name}"), f"{dest.name}/figures")
    atomic_write_text(md, text)
    written = [str(md)]
    readme = dest.resolve().parent.parent / "README.md"  # docs/reproduction -> the repository's README
    if readme.is_file() and README_BEGIN in readme.read_text():
        atomic_write_text(readme, readme_block(readme.read_text(), text))
        written.append(str(readme))
    return written


def readme_block(readme: str, report: str) -> str:
    """``readme`` with the block between the markers replaced by the report's status and findings table."""
    findings = report.split("## Findings\n\n", 1)[1].split("\n\n", 1)[0]
    status = next((ln for ln in report.splitlines() if ln.startswith("**Status")), "")
    block = README_BEGIN + "\n" + "\n\n".join(x for x in (status, findings) if x) + "\n" + README_END
    head, rest = readme.split(README_BEGIN, 1)
    return head + block + rest.split(README_END, 1)[1]


if __name__ == "__main__":  # python -m pipeline.reproduce.report docs/reproduction
    print("\n".join(republish(Path(sys.argv[1]))))
