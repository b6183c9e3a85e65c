"""The reproduction's Tables 3-6, 8, 9, 11 and findings, from the finished steps' records: Tables 3-6 and every
paired SE come from the per-image posteriors the evaluate stage saved. Errors in percent, two decimals."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import UserError
from pipeline.evaluate.metrics import true_class_ranks
from pipeline.evaluate.posteriors import Posteriors, load_posteriors
from pipeline.evaluate.protocols import combine_methods, fuse
from pipeline.reproduce.findings import PAPER, Comparison, decide, paired, unpaired
from pipeline.reproduce.plan import RUNS, NetRun, run_by_id, split_repeat
from pipeline.train.checkpoints import val_rows

__all__ = ["ClassificationErrors", "build_tables", "metrics_rows", "lr_drops"]


def pct(x: float) -> float:
    return round(100 * float(x), 2)


def se_pct(p: float, n: int) -> float:
    """Binomial standard error of an error rate ``p`` measured on ``n`` images, in percent."""
    return round(100 * math.sqrt(p * (1 - p) / max(n, 1)), 2)


def single_q(run: NetRun) -> int:
    """Paper 4.1: Q = S for fixed S, Q = (S_min + S_max) / 2 for jittered S."""
    return (run.scale[0] + run.scale[1]) // 2


class ClassificationErrors:
    """Per-image 0/1 top-1 and top-5 errors of each net, method, and test-scale set."""

    def __init__(self, records: dict[str, dict[str, Any]], multicrop: dict[str, str] | None) -> None:
        self.dense: dict[str, Posteriors] = {rid: load_posteriors(r["posteriors"]) for rid, r in records.items()}
        self.crop: dict[str, Posteriors] = {rid: load_posteriors(p) for rid, p in (multicrop or {}).items()}
        ids = {tuple(p.ids) for p in [*self.dense.values(), *self.crop.values()]}
        if len(ids) > 1:
            raise UserError("the saved posteriors of the runs cover different test images; rerun in a new workdir")
        self.labels = next(iter(self.dense.values())).labels if self.dense else np.zeros(0, np.int64)

    def posteriors(self, rid: str, method: str = "dense", scales: list[int] | None = None) -> np.ndarray:
        if method == "both":
            return combine_methods(self.posteriors(rid, "dense", scales), self.posteriors(rid, "multicrop", scales))
        src = self.dense if method == "dense" else self.crop
        return src[rid].net_posteriors(0, method, scales)

    def errors(self, post: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ranks = true_class_ranks(np.asarray(post), self.labels)
        return (ranks >= 1).astype(np.float64), (ranks >= 5).astype(np.float64)

    def scales(self, rid: str) -> list[int]:
        return self.dense[rid].scales(0, "dense")


def _row(rid: str, errs: tuple[np.ndarray, np.ndarray], paper: tuple[Any, Any] | None, **extra: Any) -> dict[str, Any]:
    e1, e5 = errs
    p1, p5 = paper or (None, None)
    return {"id": rid, **extra, "top1_error": pct(e1.mean()), "top1_se": se_pct(float(e1.mean()), len(e1)),
            "top5_error": pct(e5.mean()), "paper_top1": p1, "paper_top5": p5}


def _classification(ce: ClassificationErrors, have: list[str], records: dict[str, dict[str, Any]]
                    ) -> tuple[dict[str, list], dict[str, Any]]:
    run = {rid: run_by_id(rid) for rid in have}
    single = {rid: ce.errors(ce.posteriors(rid, "dense", [single_q(run[rid])])) for rid in have}
    multi = {rid: ce.errors(ce.posteriors(rid, "dense")) for rid in have}
    t3 = [_row(rid, single[rid], PAPER["table3"].get(rid), net=run[rid].net, train_S=_s(run[rid]),
               test_Q=str(single_q(run[rid])), epochs=records[rid]["epochs"],
               lr_drops_after=lr_drops(records[rid]["metrics"])) for rid in have]
    t4 = [_row(rid, multi[rid], PAPER["table4"].get(rid), net=run[rid].net, train_S=_s(run[rid]),
               test_Q=",".join(map(str, ce.scales(rid)))) for rid in have]
    per_q = [{"id": rid, "Q": q, "top1_error": pct(ce.errors(ce.posteriors(rid, "dense", [q]))[0].mean())}
             for rid in have for q in ce.scales(rid)]
    return {"table3": t3, "table4": t4, "scales": per_q}, {"single": single, "multi": multi}


def _s(run: NetRun) -> str:
    return str(run.scale[0]) if not run.jittered else f"[{run.scale[0]};{run.scale[1]}]"


#: the evaluation methods of Tables 5 and 6: (posteriors' name, row name)
METHOD_ROWS = (("dense", "dense"), ("multicrop", "multi-crop"), ("both", "both"))


def _crop_and_fusion(ce: ClassificationErrors, fused: bool) -> tuple[list, list, dict[tuple[str, str], Any]]:
    """Tables 5 and 6 (Table 6 once the fusion step is done) and the per-image errors behind their rows."""
    t5, t6, per = [], [], {}
    for rid in ce.crop:
        for method, name in METHOD_ROWS:
            per[(rid, method)] = ce.errors(ce.posteriors(rid, method))
            t5.append(_row(f"{rid} {name}", per[(rid, method)], PAPER["table5"].get(f"{rid} {name}"), net=rid,
                           method=name))
    if fused and len(ce.crop) == 2:
        a, b = list(ce.crop)
        for method, name in METHOD_ROWS:
            per[("fusion", method)] = ce.errors(fuse([ce.posteriors(a, method), ce.posteriors(b, method)]))
            t6.append(_row(name, per[("fusion", method)], PAPER["table6"].get(name), nets=f"{a} + {b}", method=name))
    return t5, t6, per


def _findings_cls(single: dict, multi: dict, crop: dict[tuple[str, str], Any]) -> list[dict[str, Any]]:
    def comps(pairs: list[tuple[str, str]], src: dict) -> list[Comparison] | None:
        if not all(w in src and b in src for w, b in pairs):
            return None
        return [paired(src[w][0], src[b][0], f"{w} - {b}") for w, b in pairs]

    def top1(src: dict, *ids: str) -> str:
        return ", ".join(f"{i} {pct(src[i][0].mean()):.2f}%" for i in ids if i in src)

    out = [
        decide("depth", comps([("A-fixed", "D-fixed"), ("A-fixed", "E-fixed")], single),
               top1(single, "A-fixed", "D-fixed", "E-fixed")),
        decide("lrn", comps([("A-LRN-fixed", "A-fixed")], single), top1(single, "A-fixed", "A-LRN-fixed"),
               no_gain=True),
        decide("conv1x1", comps([("C-fixed", "D-fixed")], single), top1(single, "C-fixed", "D-fixed")),
        decide("shallow5x5", comps([("B-5x5-fixed", "B-fixed")], single), top1(single, "B-fixed", "B-5x5-fixed")),
        decide("scale-jitter", comps([(f"{n}-fixed", f"{n}-jitter") for n in "CDE"], single),
               top1(single, *[f"{n}-{k}" for n in "CDE" for k in ("fixed", "jitter")]), need=2),
    ]
    ms = None
    if all(r in single and r in multi for r in ("D-jitter", "E-jitter")):
        ms = [paired(single[r][0], multi[r][0], f"{r} single Q - multi Q") for r in ("D-jitter", "E-jitter")]
    out.append(decide("multiscale-test", ms, ", ".join(
        f"{r} {pct(single[r][0].mean()):.2f}% -> {pct(multi[r][0].mean()):.2f}%" for r in ("D-jitter", "E-jitter")
        if r in single)))
    dc = fu = None
    if all((r, "both") in crop for r in ("D-jitter", "E-jitter")):
        dc = [paired(crop[(r, "dense")][0], crop[(r, "both")][0], f"{r} dense - both")
              for r in ("D-jitter", "E-jitter")]
    if ("fusion", "dense") in crop:
        best = min(("D-jitter", "E-jitter"), key=lambda r: crop[(r, "dense")][0].mean())
        fu = [paired(crop[(best, "dense")][0], crop[("fusion", "dense")][0], f"{best} - fusion (dense)")]
    out.append(decide("dense-vs-crop", dc, ", ".join(
        f"{k[0]} {k[1]} {pct(v[0].mean()):.2f}%" for k, v in crop.items() if k[0] != "fusion")))
    out.append(decide("fusion", fu, ", ".join(
        f"{k[0]} {k[1]} {pct(v[0].mean()):.2f}%" for k, v in crop.items() if k[1] == "dense") + _overlap(crop)))
    return out


def _overlap(crop: dict[tuple[str, str], Any]) -> str:
    """How many of the first net's dense errors the second net shares (what fusion cannot fix)."""
    if not all((r, "dense") in crop for r in ("D-jitter", "E-jitter")):
        return ""
    d, e = (np.asarray(crop[(r, "dense")][0], dtype=bool) for r in ("D-jitter", "E-jitter"))
    return (f"; E-jitter also errs on {int((d & e).sum())} of D-jitter's {int(d.sum())} errors "
            f"({pct((d & e).sum() / max(d.sum(), 1)):.0f}%)")


def _localisation(rec: dict[str, Any] | None) -> tuple[list, list, dict[str, Any]]:
    if rec is None:
        return [], [], decide("localisation", None, "")
    n = int(rec["crop"]["images"] or 0)
    names = {"SCR": "SCR, FC", "PCR": "PCR, FC"}
    t8 = []
    for r in rec["crop"]["rows"]:
        rid = ("PCR, all" if r["fine_tuned"] == "all" else names.get(r["regression"], r["regression"]))
        t8.append({"id": rid, "error": pct(r["error"]), "se": se_pct(r["error"], n), "paper": PAPER["table8"].get(rid)})
    t9 = [{"id": r["train"] + (f" / {r['test']}" if r.get("test") else ""), "error": pct(r["error"])}
          for r in rec["dense"]["rows"]]
    err = {r["id"]: r["error"] / 100 for r in t8}
    comps = None
    if all(k in err for k in ("SCR, FC", "PCR, FC", "PCR, all")):
        comps = [unpaired(err["SCR, FC"], err["PCR, FC"], n, "SCR, FC - PCR, FC"),
                 unpaired(err["PCR, FC"], err["PCR, all"], n, "PCR, FC - PCR, all")]
    ours = ", ".join(f"{r['id']} {r['error']:.2f}%" for r in t8 if r["paper"] is not None)
    return t8, t9, decide("localisation", comps, ours)


def _transfer(rec: dict[str, Any] | None) -> tuple[list, dict[str, Any]]:
    if rec is None:
        return [], decide("transfer", None, "")
    rows = []
    for r in rec["rows"]:
        paper = PAPER["table11"].get(r["method"], {})
        rows.append({"id": r["method"], "scales": ",".join(map(str, r["scales"])), "caltech": pct(r["caltech"]),
                     "caltech_std": pct(r["caltech_std"] or 0.0), "voc07": pct(r["voc07"]),
                     "paper_caltech": paper.get("caltech"), "paper_voc07": paper.get("voc07")})
    by = {r["method"]: r for r in rec["rows"]}
    deep, px = by["D & E"], by["raw pixels"]
    k = max(int(deep.get("caltech_splits") or 3), 1)
    se = math.sqrt(((deep["caltech_std"] or 0.0) ** 2 + (px["caltech_std"] or 0.0) ** 2) / k)
    comps = [Comparison("Caltech-style: D & E - pixels (mean class recall)", deep["caltech"] - px["caltech"], se),
             Comparison("VOC-style: D & E - pixels (mAP)", deep["voc07"] - px["voc07"], None)]
    ours = (f"Caltech-style {pct(deep['caltech']):.2f}% vs pixels {pct(px['caltech']):.2f}%; VOC-style mAP "
            f"{pct(deep['voc07']):.2f}% vs {pct(px['voc07']):.2f}%")
    return rows, decide("transfer", comps, ours)


def _repeats(ce: ClassificationErrors, single: dict[str, Any], reps: list[str]
             ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The spread over seeds: per repeated run, each seed's single-scale error; and the repeats' own rows."""
    run = {r: run_by_id(r) for r in reps}
    err = {**single, **{r: ce.errors(ce.posteriors(r, "dense", [single_q(run[r])])) for r in reps}}
    table = []
    for b in [r.id for r in RUNS if r.id in single and any(run[x].base == r.id for x in reps)]:
        mine = [b, *sorted((r for r in reps if run[r].base == b), key=lambda r: run[r].seed)]
        e1 = [pct(err[r][0].mean()) for r in mine]
        table.append({"id": b, "seeds": ",".join(str(split_repeat(r)[1]) for r in mine),
                      "top1_errors": ", ".join(f"{x:.2f}" for x in e1), "mean": round(float(np.mean(e1)), 2),
                      "std": round(float(np.std(e1, ddof=1)), 2) if len(e1) > 1 else None})
    rows = [_row(r, err[r], None, net=run[r].net, train_S=_s(run[r]), test_Q=str(single_q(run[r]))) for r in reps]
    return table, rows


def build_tables(records: dict[str, dict[str, Any]]) -> tuple[dict[str, list], list[dict[str, Any]]]:
    """All tables and the ten findings from the records present (``{run or experiment id: record}``)."""
    have = [r.id for r in RUNS if r.id in records]
    reps = sorted(rid for rid in records if split_repeat(rid)[1])
    tables: dict[str, list] = {}
    single, multi, crop = {}, {}, {}
    repeats: tuple[list, list] = ([], [])
    if have or reps:
        mc = records.get("multicrop")
        ce = ClassificationErrors({r: records[r] for r in [*have, *reps]}, mc["posteriors"] if mc else None)
        cls_tables, errs = _classification(ce, have, records)
        tables.update(cls_tables)
        single, multi = errs["single"], errs["multi"]
        if mc:
            tables["table5"], tables["table6"], crop = _crop_and_fusion(ce, "fusion" in records)
        repeats = _repeats(ce, single, reps)
    findings = _findings_cls(single, multi, crop)
    tables["table8"], tables["table9"], loc = _localisation(records.get("localisation"))
    tables["table11"], tr = _transfer(records.get("transfer"))
    tables["repeats"], tables["repeat_runs"] = repeats
    return tables, [*findings, loc, tr]


def metrics_rows(path: str | Path) -> list[dict[str, Any]]:
    """The validation rows of a training run's metrics.jsonl (epoch, top-1 error %, schedule event)."""
    return [{"epoch": r["epoch"], "top1_error": pct(1 - r["top1"]), "event": r.get("event", "")}
            for r in val_rows(path)]


def lr_drops(path: str | Path) -> str:
    """The epochs after which the plateau schedule divided the learning rate (``"6,17"``; ``"-"``: none)."""
    return ",".join(str(r["epoch"]) for r in metrics_rows(path) if r["event"] == "drop") or "-"
