"""Benchmark of the training stage (paper 3.1, 3.3): our input pipeline and SGD step vs plain loops.

Rows (``bench(quick, device) -> list[dict]`` for ``vgg bench``):

- ``loader``: our webdataset training stream (shards -> decode -> scale jitter -> crop -> flip ->
  colour offset -> batches) vs torchvision's ImageFolder + DataLoader with the same transforms
  on the same images (the PNG tree the shards were made from); both in one process. Goal >= 1.0x.
- ``train`` (same settings): ``run_train`` (fp32, contiguous) vs a plain loop: torchvision's
  ``VGG`` class with the same layers (its head resized to the crop, as ours) + ImageFolder +
  DataLoader + SGD, both with one loader worker and torch threads on the cores left (the small
  presets' layout). Goal >= 1.0x.
- ``train`` (speed switches): ``run_train`` with channels_last and bf16 autocast where the CPU has
  native bf16 (``bf16: auto``) vs the same plain loop. Goal >= 2x.
- ``ddp``: two gloo processes (one thread each, torchrun) vs one process with one thread, same
  global batch: scaling efficiency = rate(2) / (2 x rate(1)). Goal >= 0.8. Each run measures at
  least ``DDP_SECONDS`` after its warm-up interval (8 s quick, 20 s full; steps sized by an
  uncounted probe run), alternating pairs, medians of 2-step intervals (:func:`ddp_rates`).
- On CUDA (``device="cuda"``): VGG-16 (config D) at 224 with bf16 + channels_last, training
  images/s and MFU against the device's dense bf16 peak (:func:`device_bf16_peak`; 989 TFLOP/s
  for H100/H200; ~93 GFLOP per training image), vs torchvision's vgg16 in fp32.

The small net is the ``fmnist-a`` preset's (config A, width 1/4, FC 256, crop 32) on the shipped
Fashion-MNIST data. Our rates come from ``metrics.jsonl`` with the first logging interval (warm-up)
left out; ours and the baseline alternate (``pipeline.bench.alternate``), medians reported. The
machine may be shared with other work: timings are noisy.

Run: ``python benchmarks/bench_train.py [--quick] [--device cuda]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

H100_BF16_PEAK = 989e12
#: seconds each ddp run measures after its warm-up interval, by quick mode (15 fixed steps swung 0.53-0.71)
DDP_SECONDS = {True: 8.0, False: 20.0}
#: dense bf16 peak (FLOP/s) by device name (first match wins); VGG_GPU_PEAK_TFLOPS overrides
BF16_PEAKS = [("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("GH200", 989e12), ("B200", 2250e12),
              ("A100", 312e12), ("L40S", 362e12), ("L4", 121e12), ("A10", 125e12), ("RTX 4090", 165e12)]


def device_bf16_peak(name: str) -> tuple[float, str]:
    """(dense bf16 peak FLOP/s, where it came from) for a CUDA device name."""
    if os.environ.get("VGG_GPU_PEAK_TFLOPS"):
        return float(os.environ["VGG_GPU_PEAK_TFLOPS"]) * 1e12, "VGG_GPU_PEAK_TFLOPS"
    for key, peak in BF16_PEAKS:
        if key in name:
            return peak, f"{key} datasheet"
    return H100_BF16_PEAK, "unknown device: H100's peak"
MODEL = {"config": "A", "num_classes": 10, "width": 0.25, "fc_width": 256, "crop": 32, "dropout": 0.5}
SCALE = (32, 40)
BATCH = 128


def prepare(root: Path, per_class: int) -> tuple[Path, Path]:
    """The shipped Fashion-MNIST as an ImageFolder tree and as shards with statistics."""
    from pipeline.shards import ShardConfig, StatsConfig, run_shard, run_stats
    from pipeline.shipped.fashion_mnist import prepare_fashion_mnist

    tree = prepare_fashion_mnist(root / "src", train_per_class=per_class, val_per_class=20)
    shards = root / "shards"
    run_shard(ShardConfig(source=str(tree), out=str(shards), workers=1, progress=False, shard_count=1000))
    run_stats(StatsConfig(shards=str(shards), workers=1, progress=False))
    return tree, shards


def train_config(
    shards: Path, out: Path, steps: int, *, fast: bool, threads: int | None, workers: int = 1
) -> dict[str, Any]:
    return {
        "out": str(out), "model": MODEL,
        "data": {"shards": str(shards), "val_split": None, "scale": {"s_min": SCALE[0], "s_max": SCALE[1]},
                 "workers": workers, "shuffle_buffer": 500, "std": "stats"},
        "optim": {"lr": 0.02, "batch_size": BATCH}, "schedule": {"max_steps": steps, "max_epochs": 100},
        "init": {"method": "glorot"},
        "runtime": {"bf16": "auto" if fast else False, "channels_last": fast, "threads": threads},
        "checkpoint_every": 0, "log_every": max(2, steps // 5),
    }


def steady_rate(out: Path) -> float:
    """Images/s over the logged training intervals after the first (warm-up)."""
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["kind"] == "train"]
    use = rows[1:] or rows
    steps = [r["step"] for r in rows]
    n = [b - a for a, b in zip([0] + steps, steps, strict=False)][len(rows) - len(use):]
    return sum(n) * BATCH / sum(k * BATCH / r["images_per_s"] for k, r in zip(n, use, strict=False))


def ours_train(shards: Path, tmp: Path, steps: int, fast: bool) -> float:
    from pipeline.config import config_from
    from pipeline.train import TrainConfig, run_train

    out = Path(tempfile.mkdtemp(dir=tmp))
    run_train(config_from(TrainConfig, train_config(shards, out, steps, fast=fast, threads=None) | {"progress": False}))
    return steady_rate(out)


# -- the plain baseline -----------------------------------------------------------------------

def plain_model() -> nn.Module:
    """torchvision's VGG class with config A's layers at width 1/4 and the head resized to the crop."""
    from torchvision.models.vgg import VGG, make_layers

    from pipeline.models.vgg import CONFIGS, scaled_channels

    layers = [x if x == "M" else scaled_channels(x, MODEL["width"]) for x in CONFIGS["A"]]
    m = VGG(make_layers(layers), num_classes=10, init_weights=True)
    c, fc, k = layers[-2], MODEL["fc_width"], MODEL["crop"] // 32
    m.avgpool = nn.AdaptiveAvgPool2d((k, k))
    m.classifier = nn.Sequential(nn.Linear(c * k * k, fc), nn.ReLU(True), nn.Dropout(), nn.Linear(fc, fc),
                                 nn.ReLU(True), nn.Dropout(), nn.Linear(fc, 10))
    return m


def _rgb(path: str):
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


def plain_loader(tree: Path, workers: int = 0):
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder

    tf = T.Compose([T.RandomChoice([T.Resize(s) for s in range(SCALE[0], SCALE[1] + 1)]), T.RandomCrop(MODEL["crop"]),
                    T.RandomHorizontalFlip(), T.PILToTensor()])
    ds = ImageFolder(str(tree / "train"), transform=tf, loader=_rgb)
    return torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=workers, drop_last=True)


def plain_train(tree: Path, steps: int) -> float:
    """The plain loop with the small presets' process layout: one loader worker, compute on the cores left."""
    from pipeline.runtime import compute_threads

    threads = torch.get_num_threads()
    torch.set_num_threads(compute_threads(loader_workers=1))  # what run_train picks with 1 worker
    try:
        return _plain_train(tree, steps)
    finally:
        torch.set_num_threads(threads)


def _plain_train(tree: Path, steps: int) -> float:
    model = plain_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9, weight_decay=5e-4)
    mean = torch.tensor([73.0, 73.0, 73.0]).view(1, 3, 1, 1)
    warm = max(2, steps // 5)
    it = iter(plain_loader(tree, workers=1))
    t0 = None
    for i in range(steps):
        if i == warm:
            t0 = time.perf_counter()
        x, y = next(it)
        loss = nn.functional.cross_entropy(model((x.float() - mean) / 80.0), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (steps - warm) * BATCH / (time.perf_counter() - t0)


def loader_rates(tree: Path, shards: Path, batches: int) -> tuple[float, float]:
    from pipeline.preprocess import TrainScale
    from pipeline.train.loader import TrainStream, open_shards, train_loader
    from pipeline.transforms import ColourShift, TrainAugment

    s = open_shards(str(shards), ["train"])
    aug = TrainAugment(scale=TrainScale(s_min=SCALE[0], s_max=SCALE[1]), crop=MODEL["crop"],
                       colour=ColourShift.from_stats(s.stats))

    def ours() -> float:
        t = time.perf_counter()
        for _ in train_loader(TrainStream(s, "train", aug, BATCH, batches, shuffle_buffer=500), epoch=0):
            pass
        return batches * BATCH / (time.perf_counter() - t)

    def plain() -> float:
        t = time.perf_counter()
        it = iter(plain_loader(tree))
        for _ in range(batches):
            next(it)
        return batches * BATCH / (time.perf_counter() - t)

    from pipeline.bench import alternate

    return alternate(ours, plain, reps=1 if batches < 20 else 3, warmup=1)


def interval_rates(out: Path) -> list[float]:
    """Images/s of each logged training interval after the first (warm-up)."""
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    rates = [r["images_per_s"] for r in rows if r["kind"] == "train"]
    return rates[1:] or rates


def _ddp_launch(shards: Path, tmp: Path, nproc: int, steps: int) -> list[float]:
    """Interval rates of one ``vgg train`` run on ``nproc`` gloo processes (torchrun), one thread each."""
    out = Path(tempfile.mkdtemp(dir=tmp))
    cfg = train_config(shards, out, steps, fast=True, threads=1, workers=0) | {"progress": False, "log_every": 2}
    (out / "c.yaml").write_text(yaml.safe_dump(cfg))
    pre = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
        if nproc > 1
        else [sys.executable]
    )
    proc = subprocess.run(pre + ["-m", "pipeline", "train", "--config", str(out / "c.yaml")], capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    return interval_rates(out)


def ddp_rates(shards: Path, tmp: Path, min_seconds: float, reps: int) -> dict[str, Any]:
    """2 processes vs 1, each run long enough to measure ``min_seconds`` after its warm-up interval.

    An uncounted 1-process run of 10 steps warms the caches and gives the step time that sizes
    the runs; then ``reps`` alternating pairs (2, 1, 2, 1, ...). Each run's rate is the median of
    its 2-step intervals after the first (robust to another job taking a core for a moment); each
    side's rate is the median over its runs.
    """
    probe = statistics.median(_ddp_launch(shards, tmp, 1, 10))
    steps = 2 + 2 * math.ceil(min_seconds * probe / BATCH / 2)
    two, one = [], []
    for _ in range(reps):
        two.append(statistics.median(_ddp_launch(shards, tmp, 2, steps)))
        one.append(statistics.median(_ddp_launch(shards, tmp, 1, steps)))
    return {"two": statistics.median(two), "one": statistics.median(one), "steps": steps,
            "pairs": [round(a / (2 * b), 2) for a, b in zip(two, one, strict=True)]}


# -- GPU ----------------------------------------------------------------------------------------

def gpu_rows(quick: bool) -> list[dict[str, Any]]:
    """VGG-16 at 224 on one GPU: bf16 + channels_last (ours) vs torchvision vgg16 fp32; MFU vs the device's peak."""
    import numpy as np
    from sklearn.datasets import load_sample_images
    from torchvision.models import vgg16

    from pipeline.models import ModelConfig, build_model, count_flops, init_weights

    dev = torch.device("cuda")
    batch, steps = (64, 15) if quick else (128, 40)
    photos = load_sample_images().images
    rng = np.random.default_rng(0)
    crops = []
    for i in range(batch):  # real photo crops (random positions, flips) as the batch
        p = photos[i % 2]
        y, x = rng.integers(0, p.shape[0] - 224), rng.integers(0, p.shape[1] - 224)
        c = p[y:y + 224, x:x + 224]
        crops.append(c[:, ::-1] if i % 3 == 0 else c)
    xb = torch.tensor(np.stack(crops), device=dev).permute(0, 3, 1, 2).float() - 115.0
    yb = torch.arange(batch, device=dev) % 1000
    cfg = ModelConfig(config="D")
    flops = 3 * count_flops(cfg)  # forward + backward ~ 3x forward

    def run(model: nn.Module, bf16: bool, cl: bool) -> float:
        model = model.to(dev)
        x = xb.contiguous(memory_format=torch.channels_last) if cl else xb
        if cl:
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
        for i in range(steps + 5):
            if i == 5:
                torch.cuda.synchronize()
                t = time.perf_counter()
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
                loss = nn.functional.cross_entropy(model(x).float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        torch.cuda.synchronize()
        return steps * batch / (time.perf_counter() - t)

    torch.backends.cudnn.benchmark = True
    ours = run(init_weights(build_model(cfg), "glorot", seed=0), True, True)
    base = run(vgg16(), False, False)
    name = torch.cuda.get_device_name()
    peak, source = device_bf16_peak(name)
    mfu = ours * flops / peak
    return [
        {
            "stage": "train",
            "ours": ours,
            "baseline": base,
            "unit": "images/s VGG-16 224 (GPU)",
            "ratio": ours / base,
            "goal": ">= 2x",
            "meets": ours / base >= 2,
            "note": f"{name}: bf16+channels_last vs torchvision vgg16 fp32, batch {batch}; MFU {mfu:.1%} of "
            f"{peak / 1e12:.0f} TFLOP/s ({source}) "
            f"({flops / 1e9:.1f} GFLOP/image)",
        },
        {
            "stage": "train",
            "ours": mfu,
            "baseline": 1.0,
            "unit": "MFU (fraction of the device's bf16 peak)",
            "ratio": mfu,
            "goal": "report",
            "meets": True,
            "note": f"{name}, {ours:.0f} images/s",
        },
    ]


# -- all rows ---------------------------------------------------------------------------------

def _row(stage: str, ours: float, base: float, unit: str, goal: float, note: str) -> dict[str, Any]:
    r = ours / base
    return {"stage": stage, "ours": ours, "baseline": base, "unit": unit, "ratio": r, "goal": f">= {goal:g}x",
            "meets": r >= goal, "note": note}


def ddp_row(shards: Path, tmp: Path, quick: bool) -> dict[str, Any]:
    """The ddp row: scaling efficiency rate(2) / (2 x rate(1)), each side measured >= DDP_SECONDS."""
    secs, reps = DDP_SECONDS[quick], 2 if quick else 3
    m = ddp_rates(shards, tmp, secs, reps)
    eff = m["two"] / (2 * m["one"])
    return {
        "stage": "ddp", "ours": m["two"], "baseline": m["one"], "unit": "images/s", "ratio": eff,
        "goal": ">= 0.8 efficiency", "meets": eff >= 0.8,
        "note": f"2 gloo processes x 1 thread vs 1 process x 1 thread; {m['steps']} steps a run (>= {secs:g} s "
        f"measured after the warm-up interval, sized by an uncounted 10-step run), {reps} alternating pairs, "
        f"medians of 2-step intervals, then of runs; efficiency of each pair {m['pairs']}",
    }


def bench(quick: bool = True, device: str = "cpu") -> list[dict[str, Any]]:
    """All rows of the training benchmark (see the module docstring)."""
    from pipeline.bench import alternate

    steps = 15 if quick else 60
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-train-") as d:
        tmp = Path(d)
        tree, shards = prepare(tmp, 400 if quick else 800)  # >= batches x 128 images: the plain loader's epoch
        ours_l, base_l = loader_rates(tree, shards, 30 if quick else 60)  # fewer batches measure mostly start-up
        rows.append(
            _row(
                "loader",
                ours_l,
                base_l,
                "images/s",
                1.0,
                "webdataset shards + our augmentation vs ImageFolder + DataLoader, same transforms, 1 process",
            )
        )
        reps = 1 if quick else 3
        same = alternate(
            lambda: ours_train(shards, tmp, steps, fast=False), lambda: plain_train(tree, steps), reps=reps, warmup=0
        )
        rows.append(
            _row(
                "train",
                same[0],
                same[1],
                "images/s",
                1.0,
                "run_train fp32 contiguous vs torchvision VGG + DataLoader + SGD (A, width 1/4, crop 32, batch 128; "
                "both with 1 loader worker and the cores left for compute)",
            )
        )
        fast = alternate(
            lambda: ours_train(shards, tmp, steps, fast=True), lambda: plain_train(tree, steps), reps=reps, warmup=0
        )
        from pipeline.runtime import native_bf16

        bf16 = native_bf16("cpu")
        rows.append(
            _row(
                "train",
                fast[0],
                fast[1],
                "images/s",
                2.0,
                f"run_train channels_last + bf16 {'on' if bf16 else 'off (this CPU has no native bf16)'} "
                "vs the same plain loop",
            )
        )
        rows.append(ddp_row(shards, tmp, quick))
    if device == "cuda" and torch.cuda.is_available():
        rows += gpu_rows(quick)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--ddp", action="store_true", help="only the ddp row")
    args = ap.parse_args()
    if args.ddp:
        with tempfile.TemporaryDirectory(prefix="bench-ddp-") as d:
            rows = [ddp_row(prepare(Path(d), 400 if args.quick else 800)[1], Path(d), args.quick)]
    else:
        rows = bench(args.quick, args.device)
    for r in rows:
        print(
            f"{r['stage']:7s} ours {r['ours']:10.4g}  baseline {r['baseline']:10.4g} {r['unit']:34s} "
            f"ratio {r['ratio']:.2f} "
            f"(goal {r['goal']}, {'meets' if r['meets'] else 'misses'})  {r.get('note', '')}"
        )


if __name__ == "__main__":
    main()
