"""NCCL data parallelism on every GPU of the machine (paper 3.3): VGG-16 training images/s, N GPUs vs one.

``python benchmarks/bench_gpu_ddp.py [--quick] [--json]`` launches two torchrun runs of this file
(``--worker``): one process on one GPU, then one process per GPU, NCCL; each trains VGG-16 (config
D, 224x224, bf16 autocast + channels_last, SGD) on a fixed batch of real photo crops under DDP and
rank 0 reports the steady images/s. Scaling efficiency = rate(N) / (N x rate(1)); goal >= 0.8
(with one GPU the row still checks that NCCL DDP runs, and says so).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def worker(batch: int, steps: int, out: str) -> None:
    """One DDP rank: VGG-16 bf16 + channels_last on a fixed batch, images/s of the whole job to ``out``."""
    import numpy as np
    import torch
    import torch.distributed as dist
    from sklearn.datasets import load_sample_images
    from torch import nn

    from pipeline.models import ModelConfig, build_model, init_weights

    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(local)
    dev = torch.device("cuda", local)
    photos = load_sample_images().images
    rng = np.random.default_rng(rank)
    crops = []
    for i in range(batch):
        p = photos[i % 2]
        y, x = rng.integers(0, p.shape[0] - 224), rng.integers(0, p.shape[1] - 224)
        crops.append(p[y:y + 224, x:x + 224])
    xb = (torch.tensor(np.stack(crops), device=dev).permute(0, 3, 1, 2).float() - 115.0).contiguous(
        memory_format=torch.channels_last)
    yb = torch.arange(batch, device=dev) % 1000
    model = init_weights(build_model(ModelConfig(config="D")), "glorot", seed=0)
    model = model.to(dev).to(memory_format=torch.channels_last)
    ddp = nn.parallel.DistributedDataParallel(model, device_ids=[local])
    opt = torch.optim.SGD(ddp.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    torch.backends.cudnn.benchmark = True
    for i in range(steps + 5):
        if i == 5:
            torch.cuda.synchronize()
            dist.barrier()
            t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(ddp(xb).float(), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    torch.cuda.synchronize()
    dist.barrier()
    rate = steps * batch * world / (time.perf_counter() - t0)
    if rank == 0:
        Path(out).write_text(json.dumps({"world": world, "images_per_s": rate, "device": torch.cuda.get_device_name()}))
    dist.destroy_process_group()


def launch(nproc: int, batch: int, steps: int, tmp: Path) -> dict[str, Any]:
    out = tmp / f"ddp-{nproc}.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", __file__,
           "--worker", "--batch", str(batch), "--steps", str(steps), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(out.read_text())


def bench(quick: bool = True, device: str = "cuda") -> list[dict[str, Any]]:
    """Row ``ddp`` on CUDA: NCCL over every GPU vs one GPU (per-GPU batch fixed)."""
    import torch

    if device != "cuda" or not torch.cuda.is_available():
        return []
    n = torch.cuda.device_count()
    batch, steps = (64, 15) if quick else (128, 40)
    with tempfile.TemporaryDirectory(prefix="bench-gpu-ddp-") as d:
        one = launch(1, batch, steps, Path(d))
        many = launch(n, batch, steps, Path(d)) if n > 1 else one
    eff = many["images_per_s"] / (n * one["images_per_s"])
    return [{"stage": "ddp", "ours": many["images_per_s"], "baseline": one["images_per_s"],
             "unit": f"images/s VGG-16 224 bf16, NCCL on {n} GPU(s)", "ratio": eff, "goal": ">= 0.8 efficiency",
             "meets": bool(eff >= 0.8),
             "note": f"{one['device']}: {n} GPU(s) x batch {batch} vs 1 GPU; efficiency = rate(N) / (N x rate(1))"
                     + ("; one GPU only: NCCL DDP runs, scaling not measured" if n == 1 else "")}]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--out")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.worker:
        worker(a.batch, a.steps, a.out)
        return
    rows = bench(quick=a.quick)
    text = "\n".join(f"{r['stage']}: {r['ratio']:.2f} ({r['note']})" for r in rows)
    print(json.dumps(rows, indent=2) if a.json else text)


if __name__ == "__main__":
    main()
