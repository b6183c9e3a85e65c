"""The extract stage (paper Appendix B): describe every image of a dataset with one or two nets into a store.

A finished store from the same inputs is reused, an unfinished one resumed from its ``done`` mask; under
torchrun (or ``part="i/n"``) each process writes a part of whole batches, merged in source order.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

import pipeline
from pipeline.errors import UserError
from pipeline.features.batches import ExtractInput, ExtractJob, OnProgress, extract_rows
from pipeline.features.config import ExtractConfig
from pipeline.features.descriptor import Net, descriptor_scales
from pipeline.features.merge import finished_parts, merge_parts
from pipeline.features.store import FORMAT, StoreLayout, StoreOutput, create_store, part_path, set_read_defaults
from pipeline.io import atomic_path, sha256_file
from pipeline.locks import exclusive
from pipeline.models import load_model
from pipeline.preprocess import normalization_of
from pipeline.results import ExtractResult
from pipeline.reuse import check_reusable
from pipeline.runtime import DistEnv, resolve_bf16, start_distributed, stop_distributed
from pipeline.shards.config import parse_part

__all__ = ["run_extract"]

def run_extract(cfg: ExtractConfig, on_progress: OnProgress | None = None) -> ExtractResult:
    """Describe a dataset with one or two nets into a feature store (paper Appendix B).

    ``on_progress(images handled, images in this process's share)`` is called after each batch.
    Raises UserError for unreadable checkpoints or data, a scale below the crop size, no boxes for
    ``boxes=True``, or an existing store built from other inputs (without ``overwrite``).
    """
    out = Path(cfg.out)
    if cfg.merge:
        parts = finished_parts(out)
        merge_parts(out, parts)
        return ExtractResult(status="merged", path=str(out), parts=len(parts))
    if not cfg.checkpoints or cfg.data is None:
        raise UserError("extract needs one or two checkpoints and --data (or --merge to combine finished parts)")
    env = start_distributed(cfg.runtime.device)
    try:
        index, count = parse_part(cfg.part) if cfg.part is not None else (env.rank, env.world)
        out.parent.mkdir(parents=True, exist_ok=True)
        part = "" if count == 1 else f".part{index}of{count}"
        with exclusive(out.parent / f".{out.name}{part}.lock", f"feature store {out}{part and ' (' + part[1:] + ')'}"):
            result = ExtractResult(**_run(cfg, env, index, count, on_progress))
        stop_distributed(env, finished=True)
        return result
    finally:
        stop_distributed(env)


def _run(cfg: ExtractConfig, env: DistEnv, index: int, count: int, on_progress: OnProgress | None) -> dict[str, Any]:
    out, whole = Path(cfg.out), count == 1
    bf16 = resolve_bf16(cfg.runtime.bf16, env.device)
    nets, ck_info = _load_nets(cfg.checkpoints, env.device, cfg.runtime.channels_last)
    scales = descriptor_scales(cfg.scales, max(n.crop for n in nets), cfg.relative)
    inp = ExtractInput(cfg.data, cfg.split, cfg.format)
    n = len(inp.entries)
    if not n:
        raise UserError(f"{cfg.data}: split {inp.split!r} has no images")
    if cfg.boxes and not any(e.boxes for e in inp.entries):
        raise UserError(f"{cfg.data}: no boxes in split {inp.split!r}; --boxes needs a source with boxes (VOC, ILSVRC)")
    identity = {"format": FORMAT, "checkpoints": [c["sha256"] for c in ck_info], "data": inp.fingerprint,
                "kind": inp.kind, "split": inp.split, "scales": scales, "flip": cfg.flip, "boxes": cfg.boxes,
                "dtype": cfg.dtype, "precision": "bf16" if bf16 else "fp32"}
    result = {"path": str(out), "scales": scales, "dims": [n.dim for n in nets], "images": n}

    # A finished, whole store from the same inputs: nothing to do (parts are checked on their own).
    state = check_reusable(StoreOutput(out, look_into_unfinished=whole), identity, cfg.overwrite)
    if state == "reuse":
        set_read_defaults(out, cfg.aggregate, cfg.l2)
        return {**result, "status": "exists"}
    nb = -(-n // cfg.batch_size)  # batches; part `index` of `count` is a contiguous block of whole ones
    if nb < count:
        raise UserError(f"{n} images make {nb} batches of {cfg.batch_size}, fewer than the {count} parts; "
                        "use a smaller --batch-size or fewer processes")
    rows = (min(index * nb // count * cfg.batch_size, n), min((index + 1) * nb // count * cfg.batch_size, n))
    target = out if whole else part_path(out, index, count)
    if not whole:
        state = check_reusable(StoreOutput(target), identity, cfg.overwrite)
    result.update(described=0, failed=0, status="resumed" if state == "resume" else "written")
    if state != "reuse" and rows[1] > rows[0]:
        if state == "build":
            provenance = {
                "config": cfg.model_dump(mode="json"), "checkpoints": ck_info,
                "data": {**inp.describe(), "path": str(Path(cfg.data).resolve())},
                **{k: identity[k] for k in ("scales", "flip", "boxes", "dtype", "precision")},
                "pipeline_version": pipeline.__version__, "torch_version": torch.__version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "identity": identity,
            }
            with atomic_path(target) as tmp:
                create_store(tmp, StoreLayout(
                    ids=[e.key for e in inp.entries[rows[0]:rows[1]]], labels=inp.labels()[rows[0]:rows[1]],
                    label_kind=inp.label_kind, classes=inp.classes, dims=result["dims"], scales=scales,
                    provenance=provenance, identity=identity, dtype=cfg.dtype, regions=cfg.boxes,
                    aggregate=cfg.aggregate, l2=cfg.l2, row_start=rows[0], rows_total=n,
                    part=None if whole else (index, count), batch_rows=cfg.batch_size), label=target)
        job = ExtractJob(cfg, env.device, bf16, nets, scales, inp, rows, target,
                         show=cfg.progress and (env.main or cfg.part is not None), on_progress=on_progress)
        result.update(extract_rows(job))
    if whole:
        return result
    if cfg.part is not None:
        return {**result, "status": "part", "path": str(target), "part": cfg.part}
    # torchrun: every rank has finished its part; rank 0 merges them in source order.
    import torch.distributed as dist

    dist.barrier()
    if env.rank == 0:
        merge_parts(out, [part_path(out, i, count) for i in range(count)])
        result["status"] = "merged"
    dist.barrier()
    return {**result, "rank": env.rank, "world": env.world}


def _load_nets(paths: list[str], device: torch.device, channels_last: bool) -> tuple[list[Net], list[dict[str, Any]]]:
    nets, info = [], []
    for p in paths:
        model, ck = load_model(p)
        norm = normalization_of(ck)
        nets.append(Net(model, norm).to(device, channels_last))
        info.append({"path": str(Path(p).resolve()), "sha256": sha256_file(p), "model": ck["model"],
                     "normalization": norm.model_dump(mode="json"),
                     "classes": len((ck.get("meta") or {}).get("classes") or []) or None})
    return nets, info
