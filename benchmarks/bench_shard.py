"""Benchmark of the shard stage (paper 3.1): ``run_shard`` with all workers vs a plain Pillow loop.

Both sides do the same work on the same real photos (scikit-learn's sample photos scaled up to
large-photo sizes, 0.9 to 2.4 megapixels, saved as JPEG): decode, convert to RGB, resize so the
smaller side is ``max_side``, encode JPEG q90 and write a tar. The baseline is a one-process
loop with plain Pillow calls (full decode, no draft) and ``tarfile``; ours is ``run_shard`` with
all cores and JPEG draft mode (DCT-domain downscaling). Also reported: the draft-mode gain
(ours, one worker, draft on vs off) and the worker speedup (one worker vs all, draft on).
Ours and the baseline alternate after a warm-up and medians are reported (``pipeline.bench``); the
machine may be shared, so timings are noisy.

Run: ``python benchmarks/bench_shard.py [--quick]``; ``bench(quick, device) -> list[dict]`` for ``vgg bench``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

GOAL = 1.8
MAX_SIDE = 256  # the paper's fixed training scale S = 256 (S_max = 512 keeps most ImageNet images as they are)


def make_photos(root: Path, n: int) -> Path:
    """``n`` large real JPEG photos in an ImageFolder tree (4 classes)."""
    import importlib.util

    base = Path(importlib.util.find_spec("sklearn").submodule_search_locations[0]) / "datasets" / "images"
    photos = [Image.open(base / name).convert("RGB") for name in ("china.jpg", "flower.jpg")]
    rng = np.random.default_rng(0)
    for i in range(n):
        p = photos[i % 2]
        w = int(rng.integers(1100, 1800))
        h = int(w * rng.choice([0.75, 0.667, 1.333]))
        box = (
            int(rng.integers(0, 80)),
            int(rng.integers(0, 60)),
            640 - int(rng.integers(0, 80)),
            427 - int(rng.integers(0, 60)),
        )
        img = p.crop(box).resize((w, h), Image.BICUBIC)
        if i % 3 == 0:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        d = root / f"class{i % 4}"
        d.mkdir(parents=True, exist_ok=True)
        img.save(d / f"img_{i:04d}.jpg", quality=92)
    return root


def plain_loop(root: Path, out: Path, max_side: int = MAX_SIDE, quality: int = 90) -> int:
    """The baseline: one process, plain Pillow decode/convert/resize/encode, tarfile writing."""
    files = sorted(p for p in root.rglob("*.jpg"))
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out / "plain-000000.tar", "w") as tf:
        for f in files:
            img = Image.open(f).convert("RGB")
            w, h = img.size
            s = max_side / min(w, h)
            if s < 1:
                img = img.resize((round(w * s), round(h * s)), Image.BICUBIC)
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=quality)
            data = buf.getvalue()
            ti = tarfile.TarInfo(f"{f.parent.name}__{f.stem}.jpg")
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return len(files)


def _ours(root: Path, out: Path, workers: int, draft: bool) -> int:
    from pipeline.shards import ShardConfig, run_shard

    res = run_shard(ShardConfig(source=str(root), out=str(out), max_side=MAX_SIDE, workers=workers,
                                draft=draft, progress=False, overwrite=True))
    return res.written


def _rate(fn: Callable[[Path], int], n: int, cpu: list[float] | None = None) -> Callable[[], float]:
    """A measurement: run ``fn`` into a fresh folder and return images/s (CPU seconds go to ``cpu``)."""

    def measure() -> float:
        with tempfile.TemporaryDirectory() as tmp:
            c0, t = os.times(), time.perf_counter()
            done = fn(Path(tmp) / "out")
            dt, c1 = time.perf_counter() - t, os.times()
        assert done == n, (done, n)
        if cpu is not None:  # this process and its joined worker processes
            cpu.append(sum(b - a for a, b in zip(c0[:4], c1[:4], strict=False)))
        return n / dt

    return measure


def bench(quick: bool = False, device: str = "cpu") -> list[dict]:
    """Images/s of ``vgg shard`` (all workers, draft) against the plain one-process Pillow loop.

    Args:
        quick: 40 photos and 2 repetitions (default 100 photos, 3 repetitions).
        device: ignored (sharding runs on CPU cores); part of the ``vgg bench`` contract.
    Returns:
        One row: ``stage, ours, baseline, unit, ratio, goal, meets, note`` plus ``draft_gain``,
        ``worker_speedup``, ``per_core``, ``workers``, ``images``, ``max_side``.
    """
    from pipeline.bench import alternate
    from pipeline.runtime import cpu_count

    n, reps = (40, 2) if quick else (100, 3)
    workers = cpu_count()
    with tempfile.TemporaryDirectory() as tmp:
        root = make_photos(Path(tmp) / "photos", n)
        cpu_ours: list[float] = []
        cpu_base: list[float] = []
        ours, base = alternate(_rate(lambda o: _ours(root, o, workers, True), n, cpu_ours),
                               _rate(lambda o: plain_loop(root, o), n, cpu_base), reps=reps, warmup=1)
        one_draft, one_full = alternate(_rate(lambda o: _ours(root, o, 1, True), n),
                                        _rate(lambda o: _ours(root, o, 1, False), n), reps=reps, warmup=0)
    ratio = ours / base
    return [
        {
            "stage": "shard",
            "ours": round(ours, 2),
            "baseline": round(base, 2),
            "unit": "images/s",
            "ratio": round(ratio, 2),
            "goal": GOAL,
            "meets": round(ratio, 2) >= GOAL,
            "draft_gain": round(one_draft / one_full, 2),
            "worker_speedup": round(ours / one_draft, 2),
            "per_core": round(ours / workers, 2),
            "one_worker_no_draft": round(one_full, 2),
            "cpu_ms_per_image": round(1000 * statistics.median(cpu_ours[1:]) / n, 1),
            "baseline_cpu_ms_per_image": round(1000 * statistics.median(cpu_base[1:]) / n, 1),
            "workers": workers,
            "images": n,
            "max_side": MAX_SIDE,
            "note": (
                f"{workers} workers + JPEG draft vs one-process Pillow loop; {n} photos of 0.9-2.4 MP to "
                f"smaller side {MAX_SIDE}; draft gain {one_draft / one_full:.2f}x, worker speedup "
                f"{ours / one_draft:.2f}x; medians of {reps}; shared machine, timings are noisy (CPU ms per image "
                "are steadier)"
            ),
        }
    ]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="40 photos, 2 repetitions (default 100 photos, 3)")
    args = ap.parse_args(argv)
    (r,) = bench(args.quick)
    print(json.dumps(r, indent=1))
    print(
        f"vgg shard ({r['workers']} workers, draft): {r['ours']} images/s; "
        f"plain Pillow loop: {r['baseline']} images/s; "
        f"ratio {r['ratio']}x (goal {r['goal']}x: {'met' if r['meets'] else 'NOT met'}); "
        f"draft gain {r['draft_gain']}x; worker speedup {r['worker_speedup']}x; {r['per_core']} images/s per core; "
        f"CPU {r['cpu_ms_per_image']} vs {r['baseline_cpu_ms_per_image']} ms per image"
    )


if __name__ == "__main__":
    sys.exit(main())
