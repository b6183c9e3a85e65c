"""Benchmark of the training input pipeline on photo-size JPEGs (paper 3.1: S jittered in [256, 512], 224 crops).

Rows (``bench(quick, device) -> list[dict]`` for ``vgg bench``), on two deterministic sets of
photo-like JPEGs (``benchmarks/photos.py``; nothing downloaded):

- ``loader-photos``: ImageNet-size originals (smaller side 400-500 px, 85-145 KB each);
- ``loader-camera``: camera-size originals (4032 x 3024, 12 MP, about 3-3.4 MB each).

Ours is the training stream of ``pipeline.train.loader`` (shards written by ``vgg shard`` with its
defaults: smaller side stored at max_side = 512 = S_max, JPEG draft decoding; then decode with
draft, S ~ U{256..512}, random 224 crop, flip, PCA colour offset, batches of 16). Each set has
two goal rows, both per core (one process, no loader workers, one torch thread, on both sides;
images per CPU-second of the measuring process, ``time.process_time``, so that other work on a
shared machine does not count; rows with loader workers or a GPU use wall seconds):

- vs torchvision's ``ImageFolder`` + ``DataLoader`` with the same transforms (``RandomChoice`` of
  ``Resize(S)``, ``RandomCrop(224)``, ``RandomHorizontalFlip``, ``PILToTensor``, the same colour
  offset) on the original files. Goal >= 1.0x on ImageNet-size, >= 3x on camera-size originals.
- vs the physical limit: Pillow's decode alone (``Image.open(...).load()``, bytes already in
  memory) of the images as stored in the shards. Goal >= 0.8x.

Rows with goal ``report`` explain the rate. Every run: the stream's ceiling (our stream with the
augmentation replaced by Pillow's decode alone) and ours vs libjpeg-turbo's decode alone into a
tensor (torchvision's ``decode_jpeg``, which the loader uses for plain JPEGs: the floor of our decode).
Full runs add the levers: loader workers (2 vs 0), the shard's max_side (512 vs originals kept,
both read with draft) and draft decoding in our loader (on vs off, on shards of the originals).
All sides of a row alternate in one run (one uncounted round, then repetitions; medians). The
machine may be shared: timings are noisy.

Run: ``python benchmarks/bench_loader_photos.py [--quick] [--json] [--steps]`` (``--steps``: ms per image
of each augmentation step).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import io
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image

from pipeline.preprocess import TrainScale
from pipeline.transforms import ColourShift, TrainAugment

S_MIN, S_MAX, CROP, BATCH = 256, 512, 224, 16
GOALS = {"loader-photos": 1.0, "loader-camera": 3.0}  # vs ImageFolder on the originals
LIMIT_GOAL = 0.8  # vs Pillow's decode alone of the stored images, per core


def _photos():
    """``benchmarks/photos.py`` (the benchmarks folder is not a package)."""
    name = "vgg_bench_photos"  # a top-level name: pickle (process pools) re-imports functions by module name
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("photos.py"))
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


class PhotoSet(NamedTuple):
    """One generated set: the originals' ImageFolder tree and the shards ``vgg shard`` made of it."""

    name: str
    tree: Path
    shards: Path
    originals: list[Path]
    stored: list[bytes]
    stats: dict[str, Any]

    def describe(self) -> str:
        kb = [p.stat().st_size / 1000 for p in self.originals]
        sizes = [Image.open(p).size for p in self.originals]
        short = [min(s) for s in sizes]
        st = [Image.open(io.BytesIO(b)).size for b in self.stored]
        skb = [len(b) / 1000 for b in self.stored]
        return (f"{len(kb)} originals {min(short)}-{max(short)} px smaller side ({sizes[0][0]}x{sizes[0][1]} first), "
                f"{min(kb):.0f}-{max(kb):.0f} KB (mean {statistics.mean(kb):.0f}); stored {min(min(s) for s in st)}-"
                f"{max(min(s) for s in st)} px smaller side, {min(skb):.0f}-{max(skb):.0f} KB")


def shard(src: Path, out: Path, max_side: int | None, workers: int = 0) -> list[bytes]:
    """``vgg shard`` of ``src`` into ``out`` (its defaults; workers 0: all cores); the stored JPEG bytes."""
    from pipeline.shards import ShardConfig, iter_samples, run_shard

    run_shard(ShardConfig(source=str(src), out=str(out), max_side=max_side, workers=workers, progress=False))
    return [s["jpg"] for s in iter_samples(out, "train")]


def prepare(root: Path, spec, n: int) -> PhotoSet:
    """Generate ``n`` photos of ``spec`` under ``root/src`` and shard them (max_side 512) with statistics."""
    from pipeline.shards import StatsConfig, run_stats

    workers = 0 if n >= 16 else 1  # tiny sets (tests): no worker processes to start
    originals = _photos().write_photo_tree(root / "src", spec, n, workers=workers)
    stored = shard(root / "src", root / "shards-512", S_MAX, workers)
    stats = run_stats(StatsConfig(shards=str(root / "shards-512"), workers=workers, progress=False))
    return PhotoSet(spec.name, root / "src", root / "shards-512", originals, stored, stats)


# -- the sides -------------------------------------------------------------------------------------

def _augment(stats: dict[str, Any], draft: bool = True, variant: str = "loader") -> TrainAugment:
    """Our augmentation (``loader``) or the stream's ``ceiling`` (decode alone)."""
    cls = {"loader": TrainAugment, "ceiling": DecodeOnlyAugment}[variant]
    return cls(scale=TrainScale(s_min=S_MIN, s_max=S_MAX), crop=CROP, colour=ColourShift.from_stats(stats), draft=draft)


class DecodeOnlyAugment(TrainAugment):
    """Diagnostic: our stream's ceiling. Decodes like the limit, then returns a blank crop (same draws)."""

    def __call__(self, data: bytes, rng: np.random.Generator) -> tuple[torch.Tensor, np.ndarray]:
        self.scale.draw(rng)
        Image.open(io.BytesIO(data)).load()
        rng.integers(0, 2), rng.integers(0, 2), rng.random()
        offset = self.colour.offset(rng) if self.colour is not None else np.zeros(3, np.float32)
        return torch.zeros(3, self.crop, self.crop, dtype=torch.uint8), offset


def _clock(wall: bool) -> Callable[[], float]:
    """The clock of a rate: CPU seconds of this process (per core: other work on a shared machine is not
    counted), or ``wall`` seconds where work runs elsewhere (loader worker processes, a GPU)."""
    return time.perf_counter if wall else time.process_time


def ours_rate(shards: Path, augment, images: int, workers: int = 0, wall: bool = False) -> float:
    """Images per second of our training stream over ``images`` images (loader start-up included; CUDA work
    waited for): per CPU-second of this process with 0 workers on the CPU, else (or ``wall``) per wall second."""
    from pipeline.train.loader import TrainStream, open_shards, train_loader

    s = open_shards(str(shards), ["train"])
    batches = max(1, math.ceil(images / BATCH))
    cuda = str(getattr(augment, "decode_device", None)).startswith("cuda")
    clock = _clock(wall or workers > 0 or cuda)
    t = clock()
    for _ in train_loader(TrainStream(s, "train", augment, BATCH, batches, shuffle_buffer=min(100, s.count("train")),
                                      workers=workers), epoch=0):
        pass
    if cuda:
        torch.cuda.synchronize()
    return batches * BATCH / (clock() - t)


class _ColourOffset:
    """The last ImageFolder transform: the crop and its PCA colour offset, as our loader returns them."""

    def __init__(self, stats: dict[str, Any]) -> None:
        self.shift = ColourShift.from_stats(stats)
        self.rng = np.random.default_rng(0)

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
        return x, self.shift.offset(self.rng)


def _rgb(path: str) -> Image.Image:
    with Image.open(path) as im:  # torchvision's pil_loader
        return im.convert("RGB")


def folder_rate(tree: Path, stats: dict[str, Any], images: int, workers: int = 0) -> float:
    """Images/s of torchvision ImageFolder + DataLoader with the same transforms on the original files."""
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder

    tf = T.Compose([T.RandomChoice([T.Resize(s) for s in range(S_MIN, S_MAX + 1)]), T.RandomCrop(CROP),
                    T.RandomHorizontalFlip(), T.PILToTensor(), _ColourOffset(stats)])
    ds = ImageFolder(str(tree / "train"), transform=tf, loader=_rgb)
    done = 0
    clock = _clock(workers > 0)
    t = clock()
    while done < images:
        for (x, _), _ in torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=workers):
            done += len(x)
            if done >= images:
                break
    return done / (clock() - t)


def decode_rate(blobs: list[bytes], images: int) -> float:
    """Images/s of Pillow's decode alone of ``blobs`` (in memory), whole passes to at least ``images``."""
    passes = max(1, math.ceil(images / len(blobs)))
    t = time.process_time()
    for _ in range(passes):
        for b in blobs:
            Image.open(io.BytesIO(b)).load()
    return passes * len(blobs) / (time.process_time() - t)


def tv_decode_rate(blobs: list[bytes], images: int) -> float:
    """Images/s of libjpeg-turbo's decode alone into a tensor (torchvision, as the loader calls it)."""
    from pipeline.transforms import jpeg_to_tensor

    tensors = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]
    passes = max(1, math.ceil(images / len(blobs)))
    t = time.process_time()
    for _ in range(passes):
        for x in tensors:
            jpeg_to_tensor(x)
    return passes * len(blobs) / (time.process_time() - t)


def interleave(
    sides: dict[str, Callable[[], float]], reps: int, warm: tuple[str, ...] | None = None
) -> dict[str, float]:
    """One uncounted round of the ``warm`` sides (default: all), then ``reps`` rounds of all in turn; medians."""
    for k in sides if warm is None else warm:
        sides[k]()
    got: dict[str, list[float]] = {k: [] for k in sides}
    for _ in range(reps):
        for k, f in sides.items():
            got[k].append(f())
    return {k: statistics.median(v) for k, v in got.items()}


# -- rows ------------------------------------------------------------------------------------------

class Plan(NamedTuple):
    """The size of one set's measurements."""

    n: int  # photos generated
    images: int  # images per measurement of the fast sides (ours, the decode limit)
    folder_images: int  # images per measurement of the sides that decode originals (ImageFolder, ...)
    reps: int  # measured rounds (after one uncounted round of the fast sides)
    levers: bool  # also measure loader workers, the shard's max_side and draft decoding (full runs)


QUICK = {"loader-photos": Plan(64, 256, 64, 5, False), "loader-camera": Plan(8, 256, 8, 5, False)}
FULL = {"loader-photos": Plan(256, 512, 256, 5, True), "loader-camera": Plan(32, 512, 32, 3, True)}
SETS = {"loader-photos": "IMAGENET", "loader-camera": "CAMERA"}
UNIT = "images/s per core"


def _row(stage: str, ours: float, base: float, unit: str, goal: float | None, note: str) -> dict[str, Any]:
    r = ours / base
    return {"stage": stage, "ours": ours, "baseline": base, "unit": unit, "ratio": r,
            "goal": "report" if goal is None else f">= {goal:g}x", "meets": True if goal is None else r >= goal,
            "note": note}


def goal_rows(stage: str, ps: PhotoSet, plan: Plan) -> list[dict[str, Any]]:
    """Ours vs ImageFolder and vs the decode limit, per core; the stream's ceiling and the tensor decode beside them."""
    fast: dict[str, Callable[[], float]] = {
        "limit": lambda: decode_rate(ps.stored, plan.images),
        "tv": lambda: tv_decode_rate(ps.stored, plan.images),
    }
    for v in ("loader", "ceiling"):
        fast[v] = functools.partial(ours_rate, ps.shards, _augment(ps.stats, variant=v), plan.images)
    m = interleave(fast | {"folder": lambda: folder_rate(ps.tree, ps.stats, plan.folder_images)},
                   reps=plan.reps, warm=tuple(fast))
    what = (f"{ps.describe()}; 1 process, 0 workers, 1 thread, batch {BATCH}, {plan.images} images a measurement, "
            f"median of {plan.reps}")
    return [
        _row(stage, m["loader"], m["folder"], UNIT, GOALS[stage],
             f"our shards + loader vs ImageFolder + DataLoader, same transforms, on the originals; {what}"),
        _row(stage, m["loader"], m["limit"], UNIT, LIMIT_GOAL,
             f"our loader vs Pillow decode alone of the stored JPEGs (the physical limit); {what}"),
        _row(stage, m["ceiling"], m["limit"], UNIT, None,
             "diagnostic: our stream (tar, shuffle, per-sample generator, batches) with the augmentation replaced "
             "by Pillow's decode alone, vs the decode alone: what the stream's fixed costs leave"),
        _row(stage, m["loader"], m["tv"], UNIT, None,
             f"diagnostic: our loader vs libjpeg-turbo's decode alone into a tensor (torchvision decode_jpeg, the "
             f"loader's decoder for plain JPEGs; {m['tv'] / m['limit']:.2f}x Pillow's decode): what the crop, "
             "rescale, flip and stream cost beyond our own decode"),
    ]


def lever_rows(stage: str, ps: PhotoSet, plan: Plan, root: Path) -> list[dict[str, Any]]:
    """Loader workers (2 vs 0); on camera-size photos also the shard's max_side and draft decoding."""
    if not plan.levers:
        return []
    aug = _augment(ps.stats)
    w = interleave({"w2": lambda: ours_rate(ps.shards, aug, 2 * plan.images, workers=2),
                    "w0": lambda: ours_rate(ps.shards, aug, plan.images, wall=True)}, reps=plan.reps)
    rows = [_row(stage, w["w2"], w["w0"], "images/s", None,
                 f"lever: 2 loader workers vs 0 (throughput on 2 shared cores; {w['w2'] / 2:.0f} images/s per worker)")]
    if stage != "loader-camera":  # ImageNet-size originals are within max_side 512: stored as they are, no draft
        return rows
    full = root / "shards-full"
    stored = shard(ps.tree, full, None, 0 if plan.n >= 16 else 1)
    no_draft = _augment(ps.stats, draft=False)
    m = interleave(
        {
            "512": lambda: ours_rate(ps.shards, aug, plan.images),
            "full": lambda: ours_rate(full, aug, plan.folder_images),
            "full_nodraft": lambda: ours_rate(full, no_draft, plan.folder_images),
        },
        reps=plan.reps,
        warm=("512",),
    )
    mb = sum(map(len, stored)) / len(stored) / 1e6
    kb = sum(map(len, ps.stored)) / len(ps.stored) / 1e3
    return rows + [
        _row(stage, m["512"], m["full"], UNIT, None,
             f"lever: shards at max_side 512 ({kb:.0f} KB/image) vs originals kept ({mb:.1f} MB/image), both read "
             f"with draft; median of {plan.reps}"),
        _row(stage, m["full"], m["full_nodraft"], UNIT, None,
             f"lever: draft decoding in our loader (libjpeg DCT scaling to >= S) on vs off, on shards of the "
             f"originals; median of {plan.reps}"),
    ]


def stage_rows(
    stage: str, spec, plan: Plan, root: Path, log: Callable[[str], None] = lambda s: None
) -> list[dict[str, Any]]:
    """All rows of one set: generate, shard, measure."""
    t = time.perf_counter()
    ps = prepare(root, spec, plan.n)
    log(f"{stage}: {plan.n} photos generated and sharded in {time.perf_counter() - t:.1f} s")
    rows = goal_rows(stage, ps, plan)
    log(f"{stage}: goal rows after {time.perf_counter() - t:.1f} s")
    rows += lever_rows(stage, ps, plan, root)
    log(f"{stage}: levers after {time.perf_counter() - t:.1f} s")
    return rows


def bench(quick: bool = True, device: str = "cpu", log: Callable[[str], None] = lambda s: None) -> list[dict[str, Any]]:
    """The rows of both sets (CPU decoding; ``device`` is not used)."""
    plans = QUICK if quick else FULL
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # per-core rates: Pillow is single-threaded, so is our side
    rows: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-loader-photos-") as d:
            for stage, spec in SETS.items():
                rows += stage_rows(stage, getattr(_photos(), spec), plans[stage], Path(d) / stage, log)
    finally:
        torch.set_num_threads(threads)
    return rows


def gpu_rows(quick: bool = True, log: Callable[[str], None] = lambda s: None, device: str = "cuda",
             sizes: tuple[int, int, int] | None = None) -> list[dict[str, Any]]:
    """CUDA (``benchmarks/gpu_check.sh``): the loader with ``data.decode=gpu`` vs the CPU loader, ImageNet-size set.

    nvJPEG decodes each batch's JPEGs in one call in the training process and the crops are
    resampled there; the loader worker only reads the tar and parses JPEG headers. Both sides in
    one process with no workers (per core of the host), alternating; then the GPU side with 4 workers.
    ``device``/``sizes`` (photos, images a measurement, repetitions): the CPU smoke test.
    """
    n, images, reps = sizes or ((64, 1024, 3) if quick else (256, 4096, 5))
    workers = min(4, os.cpu_count() or 1)
    with tempfile.TemporaryDirectory(prefix="bench-loader-gpu-") as d:
        ps = prepare(Path(d), _photos().IMAGENET, n)
        cpu = _augment(ps.stats)
        gpu = TrainAugment(scale=TrainScale(s_min=S_MIN, s_max=S_MAX), crop=CROP,
                           colour=ColourShift.from_stats(ps.stats), decode_device=device)
        m = interleave({"gpu": lambda: ours_rate(ps.shards, gpu, images),
                        "cpu": lambda: ours_rate(ps.shards, cpu, images, wall=True),
                        "gpu4": lambda: ours_rate(ps.shards, gpu, 4 * images, workers=workers)}, reps=reps)
        what = f"{ps.describe()}; batch {BATCH}, {images} images a measurement, median of {reps}"
    log(f"loader gpu decode: {m}")
    return [
        _row("loader-photos-gpu", m["gpu"], m["cpu"], "images/s", None,
             f"data.decode=gpu (nvJPEG, crops on the GPU) vs the CPU loader, both 1 process, 0 workers; {what}"),
        _row("loader-photos-gpu", m["gpu4"], m["gpu"], "images/s", None,
             f"data.decode=gpu with {workers} loader workers vs 0 ({m['gpu4']:.0f} images/s); {what}"),
    ]


def steps(blobs: list[bytes], reps: int = 3) -> dict[str, float]:
    """Milliseconds per image of each step of the loader's augmentation, beside Pillow's decode (the limit)."""
    from pipeline.transforms import apply_plan, jpeg_to_tensor, plain_jpeg_size, sample_rng

    aug = _augment({"eigval": [1.0, 1.0, 1.0], "eigvec": np.eye(3).tolist()})
    rng = np.random.default_rng(0)
    ss = [int(v) for v in rng.integers(S_MIN, S_MAX + 1, size=len(blobs))]
    tensors = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]
    sizes = [plain_jpeg_size(b) for b in blobs]
    dec = [jpeg_to_tensor(t) for t in tensors]
    plans = [aug.plan(z, s, rng) for z, s in zip(sizes, ss, strict=False)]
    crops = [apply_plan(x, pl, CROP) for x, pl in zip(dec, plans, strict=False)]
    work: dict[str, Callable[[], object]] = {
        "Pillow decode alone (the limit)": lambda: [Image.open(io.BytesIO(b)).load() for b in blobs],
        "libjpeg-turbo decode into a tensor (the loader)": lambda: [jpeg_to_tensor(t) for t in tensors],
        "JPEG header: size from the markers (the loader)": lambda: [plain_jpeg_size(b) for b in blobs],
        "JPEG header: Pillow's Image.open (for comparison)": lambda: [Image.open(io.BytesIO(b)).size for b in blobs],
        "sample generator + crop draws + colour offset": lambda: [
            (aug.plan(z, s, g), aug.colour.offset(g))
            for i, (z, s) in enumerate(zip(sizes, ss, strict=False)) for g in [sample_rng(0, 0, str(i))]
        ],
        "window rescale + crop + flip (apply_plan)": lambda: [
            apply_plan(x, pl, CROP) for x, pl in zip(dec, plans, strict=False)
        ],
        "collate: stack the crops in batches of 16": lambda: [
            torch.stack(crops[i:i + 16]) for i in range(0, len(crops), 16)
        ],
    }
    out = {}
    for name, f in work.items():
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            f()
            times.append((time.perf_counter() - t) / len(blobs) * 1000)
        out[name] = statistics.median(times)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--steps", action="store_true", help="only time each augmentation step on 64 ImageNet-size photos")
    ap.add_argument("--gpu", action="store_true", help="only the CUDA rows (data.decode=gpu)")
    args = ap.parse_args()
    if args.gpu:
        rows = gpu_rows(args.quick, log=lambda m: print(m, file=sys.stderr))
        print(json.dumps(rows, indent=1))
        return
    if args.steps:
        torch.set_num_threads(1)
        with tempfile.TemporaryDirectory(prefix="bench-loader-steps-") as d:
            _photos().write_photo_tree(Path(d), _photos().IMAGENET, 64)
            blobs = [p.read_bytes() for p in sorted(Path(d).rglob("*.jpg"))]
        for name, ms in steps(blobs).items():
            print(f"{name:50s} {ms:6.3f} ms/image")
        return
    t = time.perf_counter()
    rows = bench(args.quick, log=lambda m: print(m, file=sys.stderr))
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    for r in rows:
        print(
            f"{r['stage']:13s} ours {r['ours']:8.4g}  baseline {r['baseline']:8.4g} {r['unit']:18s} "
            f"ratio {r['ratio']:5.2f} "
            f"(goal {r['goal']}, {'meets' if r['meets'] else 'misses'})  {r['note']}"
        )
    print(f"took {time.perf_counter() - t:.0f} s")


if __name__ == "__main__":
    main()
