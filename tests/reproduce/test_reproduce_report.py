"""The report from records: errors equal to what the posteriors were built to give, findings decided by the
rule, and report.md's tables agreeing with results.json number by number."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from pipeline.evaluate.posteriors import Posteriors
from pipeline.reproduce.plan import QUICK, RUNS
from pipeline.reproduce.report import TABLE_COLUMNS, write_report
from pipeline.reproduce.runner import Records
from pipeline.reproduce.tables import single_q

N, C = 400, 10
#: run id -> (images wrong at top-1, images wrong at top-5): the first ones of the test set
WRONG = {"A-fixed": (120, 40), "A-LRN-fixed": (124, 40), "B-fixed": (100, 30), "B-5x5-fixed": (160, 60),
         "C-fixed": (96, 30), "D-fixed": (60, 20), "E-fixed": (60, 20), "C-jitter": (80, 20), "D-jitter": (40, 10),
         "E-jitter": (44, 10)}


def _posteriors(labels: np.ndarray, wrong1: int, wrong5: int, shift: int = 0) -> np.ndarray:
    """Posteriors wrong at top-1 on images [shift, shift + wrong1) and at top-5 on the first wrong5 of them."""
    p = np.full((N, C), 0.01)
    for i, y in enumerate(labels):
        j = (i - shift) % N
        if j < wrong5:
            p[i, y] = 0.0  # ranked last
            p[i, (y + 1) % C] = 0.5
        elif j < wrong1:
            p[i, (y + 1) % C], p[i, y] = 0.5, 0.3
        else:
            p[i, y] = 0.9
    return p / p.sum(axis=1, keepdims=True)


def _write_post(path: Path, labels: np.ndarray, rid: str, method: str, qs: list[int], wrong: tuple[int, int],
                shift: int = 0) -> str:
    arr = _posteriors(labels, *wrong, shift=shift)
    post = Posteriors(ids=[f"img{i:04d}" for i in range(N)], labels=labels, classes=[f"c{k}" for k in range(C)],
                      nets=[{"label": rid}], arrays={(0, method, q): arr for q in qs})
    return str(post.save(path))


def _records(w: Path) -> Records:
    labels = np.arange(N) % C
    book = Records(w / "records")
    for run in RUNS:
        qs = [37, 55, 73] if run.jittered else [32, 37, 42]
        post = _write_post(w / run.id / "posteriors.npz", labels, run.id, "dense", qs, WRONG[run.id])
        (w / run.id / "config.yaml").write_text(f"model: {{config: {run.net}}}\n")
        book.step(run.id, {"run": run.id}, lambda p=post, r=run: {
            "checkpoint": "x.pt", "posteriors": p, "config": str(w / r.id / "config.yaml"),
            "metrics": str(w / r.id / "metrics.jsonl"), "epochs": 3, "stop": "max_epochs", "train_seconds": 1.0,
            "val_top1_best": 0.5, "device": "cpu: test", "identity_hash": r.id})
    rep = RUNS[0].repeat(1)  # A-fixed with seed 1: wrong on 4 images fewer
    post = _write_post(w / rep.id / "posteriors.npz", labels, rep.id, "dense", [32, 37, 42], (116, 40))
    (w / rep.id / "config.yaml").write_text("model: {config: A}\n")
    book.step(rep.id, {"run": rep.id}, lambda: {
        "checkpoint": "x.pt", "posteriors": post, "config": str(w / rep.id / "config.yaml"),
        "metrics": str(w / rep.id / "metrics.jsonl"), "epochs": 3, "stop": "max_epochs", "train_seconds": 1.0,
        "val_top1_best": 0.5, "device": "cpu: test", "identity_hash": rep.id})
    # multi-crop: wrong on other images than dense (shifted), so the combination and the fusion help
    mc = {rid: _write_post(w / "mc" / f"{rid}.npz", labels, rid, "multicrop", [37, 55, 73], WRONG[rid], shift=200)
          for rid in ("D-jitter", "E-jitter")}
    book.step("multicrop", {"x": 1}, lambda: {"posteriors": mc})
    book.step("fusion", {"x": 1}, lambda: {"runs": ["D-jitter", "E-jitter"]})
    crop_rows = [{"fine_tuned": "1st and 2nd FC", "regression": "SCR", "error": 0.5},
                 {"fine_tuned": "1st and 2nd FC", "regression": "PCR", "error": 0.4},
                 {"fine_tuned": "all", "regression": "PCR", "error": 0.3}]
    book.step("localisation", {"x": 1}, lambda: {"crop": {"rows": crop_rows, "images": 500},
                                                  "dense": {"rows": [{"train": "37", "test": "37", "error": 0.25}]}})
    rows = [{"method": m, "scales": [64, 96], "caltech": c, "caltech_std": 0.01, "caltech_splits": 3, "voc07": v}
            for m, c, v in (("D", 0.8, 0.6), ("E", 0.81, 0.61), ("D & E", 0.82, 0.62), ("raw pixels", 0.3, 0.4))]
    book.step("transfer", {"x": 1}, lambda: {"rows": rows})
    return book


def _report_tables(text: str) -> dict[str, list[list[str]]]:
    out: dict[str, list[list[str]]] = {}
    for key, title, _ in TABLE_COLUMNS:
        block = text.split(f"### {title}\n", 1)[1].split("\n\n", 1)[0]
        lines = [ln for ln in block.strip().splitlines() if ln.startswith("|")]
        out[key] = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]
    return out


def test_report_numbers_and_findings(tmp_path: Path) -> None:
    paths = write_report(tmp_path, _records(tmp_path), QUICK, quick=True, data={"shards": "shards"})
    res = json.loads(Path(paths["results"]).read_text())
    t3 = {r["id"]: r for r in res["tables"]["table3"]}
    for run in RUNS:  # the single-scale errors are the ones the posteriors were built with
        assert t3[run.id]["top1_error"] == pytest.approx(100 * WRONG[run.id][0] / N)
        assert t3[run.id]["top5_error"] == pytest.approx(100 * WRONG[run.id][1] / N)
        assert t3[run.id]["test_Q"] == str(single_q(run))
    verdict = {f["id"]: f["reproduced"] for f in res["findings"]}
    assert verdict["depth"] and verdict["conv1x1"] and verdict["shallow5x5"] and verdict["lrn"]
    assert verdict["scale-jitter"]  # C, D, E all better jittered; C by 16 of 400 images, D by 20 -> two beyond 2 SE
    assert verdict["multiscale-test"] is False  # the same posteriors at every Q: no gain
    assert verdict["dense-vs-crop"] and verdict["fusion"] is False  # D and E err on the same images: fusion = D
    assert verdict["localisation"] and verdict["transfer"]
    assert [r["id"] for r in res["runs"]] == [*(r.id for r in RUNS), "A-fixed-seed1"]
    assert res["runs"][-1]["seed"] == 1 and "--only A-fixed --seeds 2" in res["runs"][-1]["command"]
    assert res["tables"]["repeats"] == [{"id": "A-fixed", "seeds": "0,1", "top1_errors": "30.00, 29.00",
                                         "mean": 29.5, "std": pytest.approx(0.71, abs=0.005)}]
    assert all(Path(tmp_path, f).is_file() for f in res["figures"]) and len(res["figures"]) == 4


def test_report_tables_agree_with_results(tmp_path: Path) -> None:
    paths = write_report(tmp_path, _records(tmp_path), QUICK, quick=True, data={"shards": "shards"})
    res = json.loads(Path(paths["results"]).read_text())
    shown = _report_tables(Path(paths["report"]).read_text())
    compared = 0
    for key, _, cols in TABLE_COLUMNS:
        rows = res["tables"][key]
        assert len(shown[key]) == len(rows) > 0, key
        for row, cells in zip(rows, shown[key], strict=True):
            for col, cell in zip(cols, cells, strict=True):
                v = row.get(col)
                if isinstance(v, float):
                    assert float(cell) == pytest.approx(v, abs=0.005), (key, col)
                    compared += 1
                else:
                    assert cell == ("-" if v is None else str(v)), (key, col)
    assert compared > 100
    # the findings table shows each verdict of results.json
    text = Path(paths["report"]).read_text()
    for f in res["findings"]:
        line = next(ln for ln in text.splitlines() if re.match(rf"\| {re.escape(f['id'])} \|", ln))
        assert ("**not reproduced**" in line) == (f["reproduced"] is False)


def test_publish_copies_the_report_and_fills_the_readme_block(tmp_path: Path) -> None:
    from pipeline.reproduce.report import NOTES_BEGIN, NOTES_END, README_BEGIN, README_END, publish

    w = tmp_path / "w"
    write_report(w, _records(w), QUICK, quick=True, data={"shards": "shards"})
    repo = tmp_path / "repo"
    (repo / "docs").mkdir(parents=True)
    (repo / "README.md").write_text(f"# x\n\nbefore\n\n{README_BEGIN}\nold\n{README_END}\n\nafter\n")
    notes = f"{NOTES_BEGIN}\n- **lrn**: a reason, written by hand\n{NOTES_END}"
    (repo / "docs" / "reproduction.md").write_text(f"# old report\n\n{notes}\n\nold numbers\n")
    written = publish(w, repo / "docs" / "reproduction")
    doc = (repo / "docs" / "reproduction.md").read_text()
    assert "](reproduction/figures/" in doc and "](figures/" not in doc
    assert doc.count(notes) == 1 and "old numbers" not in doc  # the notes kept, everything else rendered anew
    assert doc.index("## Findings") < doc.index(notes) < doc.index("## Tables")
    assert all((repo / "docs" / "reproduction" / "figures" / Path(f).name).is_file()
               for f in json.loads((w / "results.json").read_text())["figures"])
    readme = (repo / "README.md").read_text()
    assert "old" not in readme and readme.startswith("# x\n\nbefore") and readme.endswith("after\n")
    assert "| depth | 3 |" in readme and str(repo / "README.md") in written
    runs = json.loads((repo / "docs" / "reproduction" / "results.json").read_text())["runs"]
    assert all((repo / "docs" / "reproduction" / r["config"]).read_text().startswith("model:") for r in runs)


def test_the_committed_report_renders_from_its_results(tmp_path: Path) -> None:
    """docs/reproduction.md is exactly what its results.json renders to (with its hand-written notes)."""
    from pipeline.reproduce.report import republish

    docs = Path(__file__).resolve().parents[2] / "docs"
    (tmp_path / "docs" / "reproduction").mkdir(parents=True)
    for name in ("reproduction.md", "reproduction/results.json"):
        (tmp_path / "docs" / name).write_text((docs / name).read_text())
    assert republish(tmp_path / "docs" / "reproduction") == [str(tmp_path / "docs" / "reproduction.md")]
    assert (tmp_path / "docs" / "reproduction.md").read_text() == (docs / "reproduction.md").read_text()
    assert "**depth**: the paper's ordering holds" in (docs / "reproduction.md").read_text()


def test_multicrop_without_the_fusion_step(tmp_path: Path) -> None:
    book = _records(tmp_path)
    (book.folder / "fusion.json").unlink()
    res = json.loads(Path(write_report(tmp_path, book, QUICK, quick=True, data={"shards": "shards"})["results"])
                     .read_text())
    verdict = {f["id"]: f["reproduced"] for f in res["findings"]}
    assert res["tables"]["table6"] == [] and len(res["tables"]["table5"]) == 6
    assert verdict["fusion"] is None and verdict["dense-vs-crop"] is True
    assert res["setup"]["pending"] == ["fusion"] and res["setup"]["steps"] == len(RUNS) + 4
