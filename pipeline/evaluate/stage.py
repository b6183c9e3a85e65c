"""The evaluate stage: checkpoints + validation data -> posteriors, errors, paper-format tables.

Paper Sections 3.2 and 4.1-4.4: dense and multi-crop evaluation at one or several test scales Q,
their combination, and the fusion of several nets. ``run_evaluate`` either runs the nets over the
data (``checkpoints`` + ``data``) or recomputes every result from saved posteriors
(``from_posteriors``), without running a net. Normalisation and default test scales come from
each checkpoint (``meta.normalization``, ``meta.train_scale``).

Outputs under ``out``: ``posteriors.npz`` (per image, net, method, scale), ``table.md`` and
``table.csv`` (Tables 3-6 format), ``config.yaml`` (resolved config) and ``eval.json``
(everything, written last, with the run's identity: the config, the inputs' sha256 and the data's
fingerprint). A run of the same identity returns the saved result; any other run replaces it
(:mod:`pipeline.reuse`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from pipeline.config import save_config
from pipeline.errors import UserError
from pipeline.evaluate.metrics import classification_report
from pipeline.evaluate.posteriors import Posteriors, load_posteriors, merge_posteriors, posteriors_file
from pipeline.evaluate.protocols import METHOD_NAMES, METHODS
from pipeline.evaluate.runner import DistContext, EvalNet, Item, check_scales, evaluate_items, gather_results
from pipeline.evaluate.tables import build_rows, format_train_scale, to_csv, to_markdown
from pipeline.io import atomic_write_text, sha256_file
from pipeline.preprocess import normalization_of, train_scale_of
from pipeline.results import EvaluateResult
from pipeline.reuse import config_fields, identity, input_digests, record_finished, saved_result
from pipeline.runtime import Progress, RuntimeStageConfig, resolve_bf16, torch_threads

__all__ = ["EvaluateConfig", "run_evaluate", "resolve_scales"]

MAX_FAILED_LISTED = 1000
#: the format of eval.json (its identity's version)
RESULT_FORMAT = "vgg-eval/1"


class EvaluateConfig(RuntimeStageConfig):
    """Configuration of ``run_evaluate`` (paper 3.2, 4.1-4.4)."""

    checkpoints: list[str] = Field(
        default_factory=list, description="checkpoints to evaluate (several: fusion, Table 6)"
    )
    data: str | None = Field(None, description="validation data: a shard folder or a source dataset")
    split: str | None = Field(None, description="split to evaluate (None: the only split, else val, else test)")
    format: str = Field("auto", description="source layout when data is not a shard folder (auto detects)")
    from_posteriors: list[str] = Field(default_factory=list,
                                       description="saved posteriors.npz files (or their folders) to recompute "
                                                   "results from, instead of running nets")
    method: Literal["dense", "multicrop", "both"] = Field(
        "dense", description="dense (fully-convolutional), multicrop (5x5 grid + flips per scale), or both "
                             "(each, and their combination, Table 5)")
    scales: list[int] | Literal["multi", "single"] = Field(
        "multi", description="test scales Q: a list, or from each checkpoint's training scale: multi = "
                             "{S-32,S,S+32} / {Smin,mid,Smax} (Table 4), single = S / mid (Table 3)")
    nets: list[int] | None = Field(None, description="indices of the nets to fuse (default all)")
    names: list[str] | None = Field(None, description="table labels of the nets (default: their config letter)")
    flip: bool = Field(True, description="average with the horizontally flipped image (paper: on)")
    grid: int = Field(5, ge=1, description="multi-crop grid side (paper: 5, i.e. 5x5 crops, x2 flips)")
    batch_size: int = Field(16, ge=1, description="images of one rescaled size per forward pass")
    crop_batch: int = Field(128, ge=1, description="crops per forward pass in multi-crop evaluation")
    max_buffered: int = Field(256, ge=1, description="most rescaled images held while batches fill")
    limit: int | None = Field(None, ge=1, description="evaluate only the first N images of the split")
    distributed: bool = Field(True, description="split the images over torchrun processes when WORLD_SIZE > 1")
    posterior_dtype: Literal["float32", "float16"] = Field("float32", description="storage type of saved posteriors")
    out: str | None = Field(None, description="output folder (None: return results without writing files)")
    progress: bool = Field(True, description="show a progress bar on a terminal")


def resolve_scales(
    cfg_scales: list[int] | str, ckpt: dict[str, Any], crop: int, where: str
) -> tuple[list[int], list[str]]:
    """Test scales of one checkpoint, and notes about defaults that were left out.

    Explicit scales below the crop are an error; default scales below it are dropped (noted).
    """
    if isinstance(cfg_scales, list):
        if not cfg_scales:
            raise UserError("scales: give at least one test scale")
        low = [q for q in cfg_scales if q < crop]
        if low:
            raise UserError(f"test scales {low} are below the crop size {crop} of {where}; Q must be >= {crop}")
        return sorted(set(cfg_scales)), []
    ts = train_scale_of(ckpt)
    if ts is None:
        raise UserError(f"{where} records no training scale (meta.train_scale); pass --scales")
    qs = [ts.single_test_scale()] if cfg_scales == "single" else ts.test_scales(crop)
    kept = sorted({q for q in qs if q >= crop})
    notes = [f"{where}: default scale(s) {sorted(set(qs) - set(kept))} below the crop {crop} left out"] \
        if len(kept) < len(set(qs)) else []
    if not kept:
        raise UserError(f"{where}: all default test scales {qs} are below the crop size {crop}; pass --scales")
    return kept, notes


def _methods(method: str) -> list[str]:
    return list(METHODS) if method == "both" else [method]


def _load_nets(cfg: EvaluateConfig, device: torch.device) -> tuple[list[EvalNet], list[dict[str, Any]], list[str]]:
    from pipeline.models import load_model

    nets, infos, notes = [], [], []
    if cfg.names is not None and len(cfg.names) != len(cfg.checkpoints):
        raise UserError(f"names: {len(cfg.names)} names for {len(cfg.checkpoints)} checkpoints")
    for i, path in enumerate(cfg.checkpoints):
        model, ck = load_model(path)
        scales, n = resolve_scales(cfg.scales, ck, model.cfg.crop, path)
        notes += n
        model = model.to(device)
        if cfg.runtime.channels_last:
            model = model.to(memory_format=torch.channels_last)
        norm = normalization_of(ck)
        ts = train_scale_of(ck)
        meta = ck.get("meta") or {}
        nets.append(EvalNet(model=model, norm=norm, scales=scales))
        infos.append({
            "label": cfg.names[i] if cfg.names else model.cfg.config, "checkpoint": str(path),
            "sha256": sha256_file(path), "model": model.cfg.model_dump(mode="json"),
            "train_scale": ts.model_dump() if ts else None, "normalization": norm.model_dump(mode="json"),
            "scales": scales, "classes": meta.get("classes"),
            "dataset_fingerprint": meta.get("dataset_fingerprint"),
        })
    return nets, infos, notes


def _check_classes(infos: list[dict[str, Any]], classes: list[str]) -> None:
    for info in infos:
        n = info["model"]["num_classes"]
        if n != len(classes):
            raise UserError(f"{info['checkpoint']} predicts {n} classes but the data has {len(classes)}")
        if info["classes"] is not None and list(info["classes"]) != list(classes):
            diff = next(i for i, (a, b) in enumerate(zip(info["classes"], classes, strict=False)) if a != b)
            raise UserError(f"{info['checkpoint']} was trained on other classes than the data "
                            f"(class {diff}: {info['classes'][diff]!r} vs {classes[diff]!r})")


def _items(view: Any, ctx: DistContext, limit: int | None):
    for index, s in enumerate(view):
        if limit is not None and index >= limit:
            return
        if ctx.mine(index):
            label = s.label if s.label is not None else -1
            yield Item(index=index, key=s.key, label=int(label), image=s.image, error=s.error)


def _run_nets(cfg: EvaluateConfig, ctx: DistContext) -> tuple[Posteriors | None, dict[str, Any]]:
    from pipeline.data import open_data

    device = ctx.device
    nets, infos, notes = _load_nets(cfg, device)
    check_scales(nets)
    view = open_data(cfg.data, cfg.split, cfg.format)
    classes = list(view.classes)
    _check_classes(infos, classes)
    total = len(view) if cfg.limit is None else min(cfg.limit, len(view))
    mine = len([i for i in range(total) if ctx.mine(i)])
    t0 = time.perf_counter()
    with Progress(mine, "evaluate", enabled=cfg.progress and ctx.rank == 0) as bar:
        local = evaluate_items(_items(view, ctx, cfg.limit), nets, _methods(cfg.method), flip=cfg.flip,
                               grid=cfg.grid, batch_size=cfg.batch_size, crop_batch=cfg.crop_batch,
                               max_buffered=cfg.max_buffered, device=device, channels_last=cfg.runtime.channels_last,
                               bf16=resolve_bf16(cfg.runtime.bf16, device), on_image=bar.advance)
    seconds = time.perf_counter() - t0
    gathered = gather_results(local, ctx, {i: n.model.cfg.num_classes for i, n in enumerate(nets)})
    data_info = {"path": str(cfg.data), "split": view.split, "kind": view.kind, "fingerprint": view.fingerprint,
                 "count": len(view), "evaluated_positions": total}
    extra = {"notes": notes, "seconds": seconds, "processes": ctx.world, "device": str(device)}
    if gathered is None:
        return None, extra
    data_info.update(n_failed=len(gathered["failed"]), failed=gathered["failed"][:MAX_FAILED_LISTED])
    post = Posteriors(ids=gathered["keys"], labels=gathered["labels"], classes=classes, nets=infos,
                      arrays=gathered["arrays"], data=data_info)
    return post, extra


def _summarise(post: Posteriors, cfg: EvaluateConfig, extra: dict[str, Any]) -> tuple[dict[str, Any], Posteriors]:
    methods = _methods(cfg.method)
    if cfg.from_posteriors:  # choose nets and scales among the saved ones
        post = post.subset(cfg.nets, cfg.scales if isinstance(cfg.scales, list) else None)
    elif cfg.nets is not None:
        post = post.subset(cfg.nets)
    scores = post.select(cfg.method)
    keep = post.labels >= 0
    if keep.any():
        report = classification_report(scores[keep], post.labels[keep], post.classes)
    else:
        report = {"top1_error": None, "top5_error": None, "n_images": 0, "mean_class_accuracy": None,
                  "per_class_accuracy": {}}
    failed = post.data.get("failed", [])
    seconds = extra.get("seconds")
    return {
        **report,
        "method": cfg.method,
        "method_name": METHOD_NAMES[cfg.method],
        "scales": [post.scales(i, methods[0]) for i in range(len(post.nets))],
        "nets": [{"label": n.get("label"), "checkpoint": n.get("checkpoint"), "sha256": n.get("sha256"),
                  "train_S": format_train_scale(n.get("train_scale")), "scales": post.scales(i, methods[0])}
                 for i, n in enumerate(post.nets)],
        "n_evaluated": len(post.ids),
        "n_unlabelled": int((~keep).sum()),
        "n_failed": int(post.data.get("n_failed", len(failed))),
        "failed": failed,
        "rows": build_rows(post, methods),
        "images_per_second": (len(post.ids) / seconds) if seconds else None,
        **extra,
        "data": {k: v for k, v in post.data.items() if k != "failed"},
    }, post


def run_evaluate(cfg: EvaluateConfig) -> EvaluateResult:
    """Evaluate checkpoints on data (or recompute from saved posteriors) with the paper's protocols.

    Args:
        cfg: the stage config; exactly one of ``checkpoints`` (with ``data``) and ``from_posteriors``.
    Returns:
        The ``eval.json`` content: ``top1_error``, ``top5_error`` (fractions), ``n_images``,
        ``method``, ``scales`` (per net), per-class accuracy, ``rows`` of the paper-format table,
        ``n_failed`` and the failed images, ``config`` and ``outputs`` (the written files, None
        without ``out``). Under torchrun every process returns the same result; only process 0
        writes files.
    """
    if bool(cfg.checkpoints) == bool(cfg.from_posteriors):
        raise UserError("give checkpoints (with --data) or --from-posteriors, not both or neither")
    ident = _identity(cfg) if cfg.out else None
    previous = _finished(cfg, ident)
    if previous is not None:  # an identical finished run: its saved result (a re-run of a flow reuses it)
        return EvaluateResult(**previous)
    ctx = DistContext.start(cfg.distributed, cfg.runtime.device) if cfg.checkpoints else DistContext()
    try:
        if cfg.from_posteriors:
            post: Posteriors | None = merge_posteriors([load_posteriors(p) for p in cfg.from_posteriors])
            extra: dict[str, Any] = {"notes": []}
        else:
            if not cfg.data:
                raise UserError("--data is required to evaluate checkpoints")
            with torch_threads(cfg.runtime.threads):
                post, extra = _run_nets(cfg, ctx)
        result: dict[str, Any] | None = None
        if post is not None:  # process 0 (or the only process)
            try:
                result, used = _summarise(post, cfg, extra)
                result["config"] = cfg.model_dump(mode="json")
                if ident is not None:
                    result["identity"] = ident
                result["outputs"] = _write(used, result, cfg, ident) if cfg.out else None
            except UserError as e:
                result = {"__error__": str(e)}
        result = ctx.broadcast(result)
        if "__error__" in result:
            raise UserError(result["__error__"])
        return EvaluateResult(**result)
    finally:
        ctx.close()


def _identity(cfg: EvaluateConfig) -> dict[str, Any] | None:
    """What the result depends on (:mod:`pipeline.reuse`): the config, the inputs' sha256, the data's fingerprint.

    None when an input is missing (the stage then fails on it with its own message).
    """
    digests = input_digests([posteriors_file(p) for p in (cfg.checkpoints or cfg.from_posteriors)])
    if digests is None:
        return None
    data = None
    if cfg.checkpoints and cfg.data:
        from pipeline.data import open_data

        data = open_data(cfg.data, cfg.split, cfg.format).fingerprint
    return identity(format=RESULT_FORMAT, config=config_fields(cfg), inputs=digests, data=data)


def _finished(cfg: EvaluateConfig, ident: dict[str, Any] | None) -> dict[str, Any] | None:
    """The saved result of an identical finished run (same identity), or None."""
    if not cfg.out:
        return None
    path = Path(cfg.out) / "eval.json"

    saved = saved_result(path, ident, "an evaluation")
    return None if saved is None else {**saved, "status": "exists"}


def _write(post: Posteriors, result: dict[str, Any], cfg: EvaluateConfig, ident: dict[str, Any] | None
           ) -> dict[str, str]:
    out = Path(cfg.out)  # type: ignore[arg-type]
    out.mkdir(parents=True, exist_ok=True)
    paths = {"posteriors": out / "posteriors.npz", "table_md": out / "table.md", "table_csv": out / "table.csv",
             "config": out / "config.yaml", "eval": out / "eval.json"}
    sources = {Path(p).resolve() for p in cfg.from_posteriors}
    if not sources & {paths["posteriors"].resolve(), out.resolve()}:  # never rewrite the file being read
        post.save(paths["posteriors"], dtype=cfg.posterior_dtype)
    title = f"{result['method_name']} evaluation, {result['n_images']} images ({post.data.get('split', '?')})"
    atomic_write_text(paths["table_md"], to_markdown(result["rows"], title))
    atomic_write_text(paths["table_csv"], to_csv(result["rows"]))
    save_config(cfg, paths["config"])
    outputs = {k: str(v) for k, v in paths.items()}
    record_finished(paths["eval"], ident or {}, {**result, "outputs": outputs})  # last: the result is finished
    return outputs
