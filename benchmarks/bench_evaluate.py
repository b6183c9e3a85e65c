"""Benchmark of the evaluate stage (paper 3.2): dense vs 150-crop evaluation, and cost per scale.

1. Seconds per image of dense evaluation (3 scales, flips) against multi-crop evaluation
   (3 scales x 5 x 5 crops x 2 flips = 150 crops) of the same net on the same real photos. The
   paper says dense evaluation is cheaper, as it avoids re-computing the net for each crop.
2. Seconds of dense evaluation of a Q x Q image at several Q, relative to Q = crop, against the
   FLOP ratio (conv layers grow as (Q/crop)^2; the FC head, as convolutions, as its positions).

Run: ``python benchmarks/bench_evaluate.py [--full] [--device cuda]`` or ``vgg bench --stages evaluate``.
The machine may be shared: timings are medians of alternating repetitions, still noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np
import torch
from PIL import Image

from pipeline.bench import alternate
from pipeline.evaluate.protocols import dense_evaluate, multi_crop, rescale_batch
from pipeline.models import ModelConfig, build_model, count_flops, init_weights
from pipeline.preprocess import Normalization, TrainScale

NORM = Normalization()


def _photos() -> list[Image.Image]:
    from sklearn.datasets import load_sample_images

    return [Image.fromarray(a) for a in load_sample_images().images]


def _net(quick: bool, device: str) -> torch.nn.Module:
    cfg = (ModelConfig(config="A", width=0.5, crop=64, fc_width=512, num_classes=100) if quick
           else ModelConfig(config="D", width=0.25, crop=224, fc_width=1024, num_classes=1000))
    model = init_weights(build_model(cfg), "glorot", seed=0).eval().to(device)
    return model.to(memory_format=torch.channels_last)


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench(quick: bool = True, device: str = "cpu") -> list[dict[str, Any]]:
    """Rows ``stage, ours, baseline, unit, ratio, goal, meets, note`` for ``vgg bench``.

    On a CPU busier than its core count, torch runs with one thread for the measurement (two
    threads on an oversubscribed machine make small convolutions tens of times slower).
    """
    threads = torch.get_num_threads()
    busy = device == "cpu" and os.getloadavg()[0] > (os.cpu_count() or 1)
    if busy:
        torch.set_num_threads(1)
    try:
        rows = _bench(quick, device)
    finally:
        torch.set_num_threads(threads)
    for r in rows:
        r["note"] += f"; {torch.get_num_threads() if not busy else 1} thread(s)"
    return rows


def _bench(quick: bool, device: str) -> list[dict[str, Any]]:
    model = _net(quick, device)
    crop = model.cfg.crop
    s = round(crop * 256 / 224)  # the paper's S = 256 for a 224 crop, scaled
    scales = TrainScale(s_min=s, s_max=s).test_scales(crop)
    photos = _photos()[:1] if quick else _photos()
    inputs = {q: [rescale_batch([p], q, NORM).to(device).contiguous(memory_format=torch.channels_last)
                  for p in photos] for q in scales}

    def run(method) -> float:
        def go() -> None:
            for q in scales:
                for x in inputs[q]:
                    method(model, x)
            _sync(device)
        return _timed(go) / len(photos)

    reps = 2 if quick else 3
    dense_s, crops_s = alternate(lambda: run(dense_evaluate), lambda: run(multi_crop), reps=reps)
    rows = [{
        "stage": "evaluate", "ours": dense_s, "baseline": crops_s, "unit": "s/image",
        "ratio": crops_s / dense_s, "goal": "dense cheaper than 150-crop (ratio > 1)", "meets": crops_s > dense_s,
        "note": f"config {model.cfg.config} x{model.cfg.width} crop {crop}, Q={scales}, flips, "
                f"{photos[0].size[0]}x{photos[0].size[1]} photos; baseline = 150-crop on the same net",
    }]

    # cost per scale: Q x Q inputs (centre of a photo), dense with flip, against the FLOP ratio
    square = photos[0].crop((0, 0, min(photos[0].size), min(photos[0].size)))
    qs = [crop, round(1.5 * crop), 2 * crop] if quick else [crop, round(1.5 * crop), 2 * crop, round(2.5 * crop)]
    xs = {q: rescale_batch([square], q, NORM).to(device).contiguous(memory_format=torch.channels_last) for q in qs}

    def at(q: int):
        def f() -> float:
            t = _timed(lambda: (dense_evaluate(model, xs[q]), _sync(device)))
            return t
        return f

    base_flops = count_flops(model.cfg, crop)
    t_crop = float(np.median([at(crop)() for _ in range(reps + 1)]))
    for q in qs[1:]:
        t_q, t_c = alternate(at(q), at(crop), reps=reps)
        time_ratio = t_q / t_c
        flop_ratio = count_flops(model.cfg, q) / base_flops
        rows.append({
            "stage": "evaluate", "ours": time_ratio, "baseline": flop_ratio, "unit": f"x time of Q={crop} (Q={q})",
            "ratio": time_ratio / flop_ratio, "goal": "time grows no faster than FLOPs (ratio <= 1.25)",
            "meets": time_ratio / flop_ratio <= 1.25,
            "note": f"dense Q={q}: {t_q * 1e3:.1f} ms vs {t_c * 1e3:.1f} ms at Q={crop} "
                    f"(median {t_crop * 1e3:.1f} ms); (Q/crop)^2 = {(q / crop) ** 2:.2f}",
        })
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="bigger net (D x0.25, crop 224), more repetitions")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    for row in bench(quick=not args.full, device=args.device):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
