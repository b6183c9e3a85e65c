"""Benchmark of the extract stage (paper Appendix B): extraction into HDF5 against bare forward passes.

Ours: images/s of ``run_extract`` end to end (checkpoint hashing, listing, store creation, reading
and decoding JPEGs, rescaling to every Q, flipping, the forward passes, global average pooling,
writing and flushing the HDF5 store). Baseline: images/s of the forward passes alone, of the same
net at the same scales on the same images, already decoded, rescaled, normalised and batched
exactly as the extraction batches them. The ratio is the share of the time spent in the net;
goal: overhead of reading, flipping, pooling and writing at most 20% (ratio >= 0.8).

Data: JPEG photos of various sizes cut from scikit-learn's two sample photos (real images, offline),
in an ImageFolder tree. Run: ``python benchmarks/bench_extract.py [--full] [--device cuda]`` or
``vgg bench --stages extract``. The machine may be shared: timings are medians of alternating
repetitions, still noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from pipeline.bench import alternate
from pipeline.features import ExtractConfig, Net, prepare_images, run_extract
from pipeline.models import ModelConfig, build_model, init_weights, load_model, save_checkpoint
from pipeline.preprocess import normalization_of, normalize
from pipeline.runtime import resolve_device


def _photo_tree(root: Path, n: int, seed: int = 0) -> Path:
    """``n`` JPEG crops (smaller side 160-427 px, mixed aspect ratios) of the sample photos, two classes."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(seed)
    for i in range(n):
        c = i % 2
        arr = photos[c]
        h = int(rng.integers(160, arr.shape[0] + 1))
        w = int(rng.integers(h, min(arr.shape[1], 2 * h) + 1)) if rng.random() < 0.7 else int(rng.integers(120, h + 1))
        y, x = int(rng.integers(0, arr.shape[0] - h + 1)), int(rng.integers(0, arr.shape[1] - w + 1))
        d = root / ("china" if c == 0 else "flower")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr[y:y + h, x:x + w]).save(d / f"{i:05d}.jpg", quality=90)
    return root


def _setup(tmp: Path, quick: bool) -> tuple[Path, Path, list[int], int]:
    cfg = (ModelConfig(config="A", width=0.25, crop=64, fc_width=256, num_classes=10) if quick
           else ModelConfig(config="D", width=0.25, crop=64, fc_width=512, num_classes=10))
    model = init_weights(build_model(cfg), "glorot", seed=0)
    ckpt = save_checkpoint(tmp / "net.pt", model, meta={"normalization": {"mean": [123.68, 116.779, 103.939],
                                                                          "std": [58.0, 58.0, 58.0]}})
    n = 32 if quick else 256
    data = _photo_tree(tmp / "photos", n)
    scales = [64, 96, 128]  # the paper's {256, 384, 512} relative to a 64 crop
    return ckpt, data, scales, n


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
        with tempfile.TemporaryDirectory(prefix="bench_extract_") as tmp:
            rows = _bench(Path(tmp), quick, device)
    finally:
        used = torch.get_num_threads()
        torch.set_num_threads(threads)
    for r in rows:
        r["note"] += f"; {used} torch thread(s){' (machine busy)' if busy else ''}"
    return rows


def _bench(tmp: Path, quick: bool, device: str) -> list[dict[str, Any]]:
    ckpt, data, scales, n = _setup(tmp, quick)
    dev = resolve_device(device)
    fast = dev.type == "cuda"  # bf16 + channels_last where they pay off (GPUs; AMX CPUs)
    precision, channels_last = ("bf16", True) if fast else ("fp32", False)
    batch = 16
    cfg = ExtractConfig(checkpoints=[str(ckpt)], data=str(data), out=str(tmp / "f.h5"), scales=scales,
                        batch_size=batch, runtime={"device": str(dev), "bf16": fast, "channels_last": channels_last},
                        progress=False)

    # baseline inputs: the same images, decoded, rescaled and grouped exactly as the extraction does
    model, ck = load_model(ckpt)
    net = Net(model, normalization_of(ck)).to(dev, channels_last)
    files = sorted(p for p in data.rglob("*.jpg"))
    images = [Image.open(p).convert("RGB") for p in files]
    inputs = []
    for s in range(0, n, batch):
        for groups in prepare_images(images[s:s + batch], scales, flip=True, max_pixels=cfg.max_pixels).values():
            for g in groups:
                x = normalize(g.pixels.to(dev), net.norm)
                x = torch.cat([x, x.flip(-1)])
                inputs.append(x.contiguous(memory_format=torch.channels_last) if channels_last else x)

    def forward_only() -> float:
        t0 = time.perf_counter()
        with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            for x in inputs:
                net.model.forward_features(x, dense=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return n / (time.perf_counter() - t0)

    loop_rates: list[float] = []
    runs = [0]

    def extract() -> float:
        runs[0] += 1
        out = tmp / f"f{runs[0]}.h5"
        t0 = time.perf_counter()
        res = run_extract(cfg.model_copy(update={"out": str(out)}))
        wall = time.perf_counter() - t0
        loop_rates.append(res.images_per_s)
        out.unlink()
        return n / wall

    ours, base = alternate(extract, forward_only, reps=2 if quick else 3)
    ratio = ours / base
    return [{
        "stage": "extract", "ours": ours, "baseline": base, "unit": "images/s", "ratio": ratio,
        "goal": "overhead <= 20% (ratio >= 0.8)", "meets": ratio >= 0.8,
        "note": f"config {net.model.cfg.config} x{net.model.cfg.width} crop 64 FC {net.dim}, Q={scales}, flips, "
                f"{n} JPEG photos (smaller side 120-427), batch {batch}, {precision}"
                f"{' channels_last' if channels_last else ''}, {dev}; ours = whole run_extract wall time "
                f"(extraction loop alone: {float(np.median(loop_rates)):.1f} images/s)",
    }]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="bigger net (D x0.25, FC 512) and 256 images")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    for row in bench(quick=not args.full, device=args.device):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
