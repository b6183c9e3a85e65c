"""``vgg bench``: every stage's throughput against its plain baseline, in one run, on this machine.

Each ``benchmarks/bench_<stage>.py`` has ``bench(quick, device) -> list[dict]``, rows of ``stage, ours,
baseline, unit, ratio, goal, meets`` (and ``note``) measured by :func:`alternate`; this module collects them.
"""

from __future__ import annotations

import importlib.util
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.errors import UserError

__all__ = ["STAGES", "BENCH_DIR", "run_bench", "alternate", "markdown", "load_benchmark"]

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
#: stage name -> benchmark module file
STAGES = {"shard": "bench_shard.py", "loader": "bench_train.py", "loader-photos": "bench_loader_photos.py",
          "loader-camera": "bench_loader_photos.py", "train": "bench_train.py", "ddp": "bench_train.py",
          "evaluate": "bench_evaluate.py", "extract": "bench_extract.py", "transfer": "bench_transfer.py",
          "transfer-paper": "bench_transfer_paper.py"}


def alternate(ours: Callable[[], float], baseline: Callable[[], float], reps: int = 3, warmup: int = 1
              ) -> tuple[float, float]:
    """Run two measurements (same data, device and process) alternately after a warm-up; medians of each."""
    for _ in range(warmup):
        ours(), baseline()
    a, b = [], []
    for _ in range(reps):
        a.append(ours())
        b.append(baseline())
    return statistics.median(a), statistics.median(b)


def load_benchmark(file: str):
    """The module ``benchmarks/<file>`` (the benchmarks folder is not a package)."""
    path = BENCH_DIR / file
    if not path.is_file():
        raise UserError(f"benchmark {path} not found (run `vgg bench` from a source checkout)")
    spec = importlib.util.spec_from_file_location(f"benchmarks.{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


def run_bench(stages: list[str], quick: bool = True, device: str = "cpu", log: Callable[[str], None] = print
              ) -> list[dict[str, Any]]:
    """Run the benchmarks of ``stages`` and return their rows (stage order kept)."""
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise UserError(f"unknown stage(s) {unknown} (one of {', '.join(STAGES)})")
    rows: list[dict[str, Any]] = []
    done_files: dict[str, list[dict[str, Any]]] = {}
    for stage in stages:
        file = STAGES[stage]
        if file not in done_files:
            t0 = time.perf_counter()
            log(f"bench: running {file} ({'quick' if quick else 'full'}, {device}) ...")
            done_files[file] = load_benchmark(file).bench(quick=quick, device=device)
            log(f"bench: {file} took {time.perf_counter() - t0:.1f} s")
        rows += [r for r in done_files[file] if r["stage"] == stage]
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    """The bench table in Markdown."""
    out = ["| stage | ours | baseline | unit | ratio | goal | meets |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['stage']} | {r['ours']:.4g} | {r['baseline']:.4g} | {r['unit']} | "
                   f"{r['ratio']:.2f} | {r['goal']} | {'yes' if r['meets'] else 'no'} |")
    return "\n".join(out)
