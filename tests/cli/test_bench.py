"""`vgg bench`: the benchmark collector (pipeline/bench.py) and the CLI around it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from pipeline.bench import STAGES, alternate, load_benchmark, markdown, run_bench
from pipeline.errors import UserError


def test_alternate_interleaves_after_warmup_and_takes_medians():
    calls: list[str] = []
    a_vals = iter([100.0, 3.0, 1.0, 2.0])  # the first (warm-up) value must not count
    b_vals = iter([100.0, 30.0, 10.0, 20.0])
    a = lambda: calls.append("a") or next(a_vals)  # noqa: E731
    b = lambda: calls.append("b") or next(b_vals)  # noqa: E731
    assert alternate(a, b, reps=3, warmup=1) == (2.0, 20.0)
    assert calls == ["a", "b"] * 4


def test_every_stage_of_the_issue_has_a_benchmark_file():
    assert set(STAGES) == {"shard", "loader", "loader-photos", "loader-camera", "train", "ddp", "evaluate", "extract",
                           "transfer", "transfer-paper"}
    for file in STAGES.values():
        mod = load_benchmark(file)
        assert callable(mod.bench), file


def test_unknown_stage_is_a_one_line_error():
    with pytest.raises(UserError, match="unknown stage"):
        run_bench(["shard", "warp-drive"])
    r = subprocess.run([sys.executable, "-m", "pipeline", "bench", "--stages", "warp-drive"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2
    assert "unknown stage" in r.stderr and "Traceback" not in r.stderr


def test_markdown_table_has_one_row_per_result():
    rows = [
        {
            "stage": "shard",
            "ours": 26.1,
            "baseline": 9.2,
            "unit": "images/s",
            "ratio": 2.84,
            "goal": ">= 1.8x",
            "meets": True,
        },
        {
            "stage": "ddp",
            "ours": 800.0,
            "baseline": 500.0,
            "unit": "images/s",
            "ratio": 0.8,
            "goal": ">= 0.8 efficiency",
            "meets": False,
        },
    ]
    lines = markdown(rows).splitlines()
    assert lines[0].startswith("| stage | ours | baseline")
    assert lines[2] == "| shard | 26.1 | 9.2 | images/s | 2.84 | >= 1.8x | yes |"
    assert lines[3].endswith("| no |") and len(lines) == 4


@pytest.mark.slow
def test_vgg_bench_transfer_quick_json_runs_both_sides_on_the_same_data():
    r = subprocess.run([sys.executable, "-m", "pipeline", "bench", "--stages", "transfer", "--quick", "--json"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    (row,) = json.loads(r.stdout)
    assert row["stage"] == "transfer" and row["ours"] > 0 and row["baseline"] > 0
    assert row["ratio"] == pytest.approx(row["baseline"] / row["ours"])
    assert {"unit", "goal", "meets", "note"} <= set(row)


def test_paper_descriptors_have_the_caltech256_shape_and_class_structure():
    from sklearn.svm import LinearSVC

    X, y = load_benchmark("bench_transfer_paper.py").paper_descriptors(6, 40, dim=3000)
    assert X.shape == (240, 3000) and X.dtype.name == "float32" and (X >= 0).all()
    assert (abs(1 - (X.astype("float64") ** 2).sum(1)) < 1e-5).all()
    train = np.ones(len(y), dtype=bool)
    train[1::2] = False
    acc = [(LinearSVC(C=C).fit(X[train], y[train]).predict(X[~train]) == y[~train]).mean() for C in (0.01, 100.0)]
    assert 1 / 6 + 0.1 < max(acc) < 1.0  # learnable, not trivial


def test_ddp_interval_rates_leave_out_the_warm_up_interval(tmp_path):
    """The ddp row's rate of a run: its logged training intervals after the first, whose median resists a stall."""
    import statistics

    rows = [{"kind": "train", "step": 2 * i + 2, "images_per_s": r} for i, r in enumerate([90, 500, 510, 40, 490])]
    rows.insert(3, {"kind": "val", "step": 6, "top1": 0.5})
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rates = load_benchmark("bench_train.py").interval_rates(tmp_path)
    assert rates == [500, 510, 40, 490] and statistics.median(rates) == 495
