"""``vgg reproduce --quick`` end to end (slow: ~10 minutes on two cores): every experiment at its tiny budget,
the outputs, the report agreeing with results.json, and a re-run that reuses every finished step."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.reproduce.findings import CLAIMS
from pipeline.reproduce.plan import EXPERIMENTS, RUNS
from pipeline.reproduce.report import TABLE_COLUMNS
from tests.reproduce.test_reproduce_report import _report_tables


def _vgg(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, timeout=1800)


@pytest.mark.slow
def test_quick_reproduction_runs_every_experiment_and_resumes(tmp_path: Path) -> None:
    w = tmp_path / "repro"
    t0 = time.perf_counter()
    p = _vgg("reproduce", "--quick", "--workdir", str(w), "--no-progress")
    first = time.perf_counter() - t0
    assert p.returncode == 0, p.stderr[-3000:]
    assert first < 15 * 60
    res = json.loads((w / "results.json").read_text())
    assert [r["id"] for r in res["runs"]] == [r.id for r in RUNS]
    assert {f["id"] for f in res["findings"]} == set(CLAIMS)
    assert all(f["reproduced"] in (True, False) for f in res["findings"])  # every finding was decided
    for run in res["runs"]:
        assert set(run) >= {"id", "config", "command", "seed", "top1_error", "top5_error", "epochs", "seconds",
                            "device"}
        assert (w / run["config"]).is_file() and 0 <= run["top1_error"] <= 100
    assert len(res["figures"]) == 4 and all((w / f).stat().st_size > 1000 for f in res["figures"])
    shown = _report_tables((w / "report.md").read_text())
    for key, _, cols in TABLE_COLUMNS:
        assert len(shown[key]) == len(res["tables"][key]) > 0, key
        for row, cells in zip(res["tables"][key], shown[key], strict=True):
            for col, cell in zip(cols, cells, strict=True):
                if isinstance(row.get(col), float):
                    assert float(cell) == pytest.approx(row[col], abs=0.005)
    records = sorted(p.name for p in (w / "records").glob("*.json"))
    assert records == sorted(f"{i}.json" for i in [*(r.id for r in RUNS), *EXPERIMENTS])
    t0 = time.perf_counter()
    again = _vgg("reproduce", "--quick", "--workdir", str(w), "--no-progress")
    assert again.returncode == 0, again.stderr[-3000:]
    assert time.perf_counter() - t0 < 90  # nothing is trained or evaluated again
    assert json.loads((w / "results.json").read_text())["tables"] == res["tables"]
    other = _vgg("reproduce", "--quick", "--workdir", str(w), "--budget.epoch-images", "128", "--only", "A-fixed")
    assert other.returncode == 2 and "other settings" in other.stderr and "Traceback" not in other.stderr
