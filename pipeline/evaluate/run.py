"""``run_evaluate`` (paper 3.2, 4.1-4.4): checkpoints + validation data (or saved posteriors) -> errors and
paper-format tables, written with, last, ``eval.json`` (docs/evaluation.md)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pipeline.config import save_config
from pipeline.errors import UserError
from pipeline.evaluate.config import EvaluateConfig
from pipeline.evaluate.metrics import classification_report
from pipeline.evaluate.posteriors import Posteriors, load_posteriors, merge_posteriors, posteriors_file
from pipeline.evaluate.protocols import METHOD_NAMES, methods_of
from pipeline.evaluate.runner import EvalSettings, broadcast, check_classes, evaluate_items, gather_results, load_nets
from pipeline.evaluate.tables import build_rows, format_train_scale, to_csv, to_markdown
from pipeline.io import atomic_write_text
from pipeline.results import EvaluateResult
from pipeline.reuse import JsonRecord, config_fields, identity, input_digests, record_finished
from pipeline.runtime import DistEnv, Progress, resolve_bf16, start_distributed, stop_distributed, torch_threads

__all__ = ["run_evaluate"]

MAX_FAILED_LISTED = 1000
#: the format of eval.json (its identity's version)
RESULT_FORMAT = "vgg-eval/1"


def run_evaluate(cfg: EvaluateConfig) -> EvaluateResult:
    """Evaluate ``checkpoints`` on ``data``, or recompute from ``from_posteriors``, with the paper's protocols.

    Returns the ``eval.json`` content (errors as fractions, per-class accuracy, the paper-format ``rows``, the
    failed images, ``outputs``: None without ``out``), the same on every torchrun process; process 0 writes.
    """
    if bool(cfg.checkpoints) == bool(cfg.from_posteriors):
        raise UserError("give checkpoints (with --data) or --from-posteriors, not both or neither")
    ident = _identity(cfg) if cfg.out else None
    previous = JsonRecord(Path(cfg.out) / "eval.json", "an evaluation").saved(ident) if cfg.out else None
    if previous is not None:  # an identical finished run: its saved result (a re-run of a flow reuses it)
        return EvaluateResult(**{**previous, "status": "exists"})
    env = start_distributed(cfg.runtime.device, cfg.distributed) if cfg.checkpoints else None
    try:
        if cfg.from_posteriors:
            post: Posteriors | None = merge_posteriors([load_posteriors(p) for p in cfg.from_posteriors])
            extra: dict[str, Any] = {"notes": []}
        elif not cfg.data:
            raise UserError("--data is required to evaluate checkpoints")
        else:
            with torch_threads(cfg.runtime.threads):
                post, extra = _run_nets(cfg, env)  # type: ignore[arg-type]
        result: dict[str, Any] | None = None
        if post is not None:  # process 0 (or the only process)
            try:
                result, used = _summarise(post, cfg, {**extra, "config": cfg.model_dump(mode="json"),
                                                      **({"identity": ident} if ident is not None else {})})
                result["outputs"] = _write(used, result, cfg, ident) if cfg.out else None
            except UserError as e:
                result = {"__error__": str(e)}
        result = broadcast(result, env)
        if "__error__" in result:
            raise UserError(result["__error__"])
        if env is not None:
            stop_distributed(env, finished=True)
        return EvaluateResult(**result)
    finally:
        if env is not None:
            stop_distributed(env)


def _run_nets(cfg: EvaluateConfig, env: DistEnv) -> tuple[Posteriors | None, dict[str, Any]]:
    """This process's share of the images through every net; the posteriors on process 0 (None elsewhere)."""
    from pipeline.data import open_data

    how = EvalSettings(methods_of(cfg.method), flip=cfg.flip, grid=cfg.grid, batch_size=cfg.batch_size,
                       crop_batch=cfg.crop_batch, max_buffered=cfg.max_buffered, device=env.device,
                       channels_last=cfg.runtime.channels_last, bf16=resolve_bf16(cfg.runtime.bf16, env.device))
    nets, infos, notes = load_nets(cfg.checkpoints, cfg.scales, cfg.names, how)
    view = open_data(cfg.data, cfg.split, cfg.format)
    classes = list(view.classes)
    check_classes(infos, classes)
    total = len(view) if cfg.limit is None else min(cfg.limit, len(view))
    mine = range(env.rank, total, env.world)
    samples = ((i, s) for i, s in zip(range(total), view, strict=False) if i % env.world == env.rank)
    t0 = time.perf_counter()
    with Progress(len(mine), "evaluate", enabled=cfg.progress and env.main) as bar:
        local = evaluate_items(samples, nets, how, on_image=bar.advance)
    seconds = time.perf_counter() - t0
    every = gather_results(local, env)
    extra = {"notes": notes, "seconds": seconds, "processes": env.world, "device": str(env.device)}
    if every is None:
        return None, extra
    data_info = {"path": str(cfg.data), "split": view.split, "kind": view.kind, "fingerprint": view.fingerprint,
                 "count": len(view), "evaluated_positions": total, "n_failed": len(every.failed),
                 "failed": every.failed[:MAX_FAILED_LISTED]}
    return Posteriors(ids=every.keys, labels=every.labels, classes=classes, nets=infos,
                      arrays=every.arrays, data=data_info), extra


def _summarise(post: Posteriors, cfg: EvaluateConfig, extra: dict[str, Any]) -> tuple[dict[str, Any], Posteriors]:
    """The result (errors of the chosen method and nets, table rows, per-net scales, then ``extra``), and the
    posteriors used."""
    methods = methods_of(cfg.method)
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
    failed, seconds = post.data.get("failed", []), extra.get("seconds")
    return {
        **report, "method": cfg.method, "method_name": METHOD_NAMES[cfg.method],
        "scales": [post.scales(i, methods[0]) for i in range(len(post.nets))],
        "nets": [{"label": n.get("label"), "checkpoint": n.get("checkpoint"), "sha256": n.get("sha256"),
                  "train_S": format_train_scale(n.get("train_scale")), "scales": post.scales(i, methods[0])}
                 for i, n in enumerate(post.nets)],
        "n_evaluated": len(post.ids), "n_unlabelled": int((~keep).sum()),
        "n_failed": int(post.data.get("n_failed", len(failed))), "failed": failed,
        "rows": build_rows(post, methods), "images_per_second": (len(post.ids) / seconds) if seconds else None,
        **extra, "data": {k: v for k, v in post.data.items() if k != "failed"},
    }, post


def _identity(cfg: EvaluateConfig) -> dict[str, Any] | None:
    """What the result depends on (the config, the inputs' sha256, the data's fingerprint); None when an input is
    missing (the stage then fails on it with its own message)."""
    digests = input_digests([posteriors_file(p) for p in (cfg.checkpoints or cfg.from_posteriors)])
    if digests is None:
        return None
    data = None
    if cfg.checkpoints and cfg.data:
        from pipeline.data import open_data

        data = open_data(cfg.data, cfg.split, cfg.format).fingerprint
    return identity(format=RESULT_FORMAT, config=config_fields(cfg), inputs=digests, data=data)


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
