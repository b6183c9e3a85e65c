"""The localisation stages (paper Appendix A): training (A.1) and the two testing protocols (A.1-A.2, Tables 8-9).

Outputs, resume and reuse: docs/formats.md section 4.9.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.errors import UserError
from pipeline.io import atomic_write_json, sha256_file
from pipeline.localise.config import LocaliseEvalConfig, LocaliseTrainConfig
from pipeline.localise.net import load_classifier, localisation_net
from pipeline.localise.protocols import Runner
from pipeline.localise.records import (
    SUMMARY_FORMAT,
    crop_records,
    dense_records,
    evaluation_identity,
    mean_errors,
    open_evaluation,
    write_evaluation,
)
from pipeline.localise.selection import MAX_LISTED, class_names, read_blacklist, skip_summary
from pipeline.localise.tables import crop_rows, crop_table, dense_rows, dense_table
from pipeline.localise.training import BoxRegression, TrainingRun
from pipeline.preprocess import normalization_of, train_scale_of
from pipeline.results import TRAIN_RESULT, LocaliseEvalResult, LocaliseTrainResult
from pipeline.reuse import JsonRecord
from pipeline.runtime import DistEnv, Progress
from pipeline.train.checkpoints import RunPaths
from pipeline.train.engine import Engine, Plan
from pipeline.train.recipe import freeze_conv

__all__ = ["run_localise_train", "run_localise_evaluate"]


def run_localise_train(cfg: LocaliseTrainConfig) -> LocaliseTrainResult:
    """Fine-tune a localisation net from a classification checkpoint (paper A.1).

    A killed run, run again with the same config, continues from the last finished epoch and gives
    the result of an uninterrupted run; a finished one returns its result (more ``epochs`` continue it).

    Raises:
        UserError: a classifier of other classes than the data, a localisation checkpoint given as
            classifier, data without boxes, a scale below the crop, an ``out`` holding another run.
    """
    from pipeline.data import open_data

    view = open_data(cfg.data, cfg.split, cfg.format)
    classes = list(view.classes)
    # the class order does not matter (the box layer is fresh), the classes do
    classifier, ck, _ = load_classifier(cfg.classifier, classes, class_names(view))
    recorded = train_scale_of(ck)
    s = cfg.scale or (recorded.s_min if recorded else None)
    if s is None:
        raise UserError(f"{cfg.classifier} records no training scale; set scale")
    if s < classifier.cfg.crop:
        raise UserError(f"training scale S={s} is below the crop size {classifier.cfg.crop}")
    norm, runner = normalization_of(ck), Runner.of(cfg.runtime)
    model = localisation_net(classifier, cfg.head, cfg.init_std, seed=cfg.seed, dropout=cfg.dropout)
    meta = {"normalization": norm.model_dump(), "train_scale": {"s_min": s, "s_max": s}, "classes": classes,
            "dataset_fingerprint": view.fingerprint, "config": cfg.model_dump(mode="json"),
            "localise": {"head": cfg.head, "fine_tune": cfg.fine_tune, "classifier": cfg.classifier,
                         "classifier_sha256": sha256_file(cfg.classifier)}}
    freeze_conv(model, cfg.fine_tune)
    model = runner.prepare(model)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay)
    n = min(len(view), cfg.limit) if cfg.limit else len(view)
    engine = Engine(RunPaths(cfg.out), DistEnv(0, 1, 0, runner.device, None, owns_group=False),
                    Plan("localise train", cfg.epochs, epoch_images=n, progress=cfg.progress, verbose=cfg.progress,
                         resume_mid_epoch=False))  # resumes at epoch ends
    task = BoxRegression(TrainingRun(cfg, view, runner, engine, s, norm, meta), model, opt)
    task.resume()
    pos = engine.run(task, cfg)
    paths = engine.paths
    result = {"format": "vgg-localise-train/1", "out": str(paths.out), "last": str(paths.last),
              "best": str(paths.best), "metrics": str(paths.metrics), "result_json": str(paths.out / TRAIN_RESULT),
              "head": cfg.head, "fine_tune": cfg.fine_tune, "train_scale": s, "crop": task.crop, "classes": classes,
              "history": task.history, "best_epoch": task.best, "skips": task.skip_summary, "stop": pos.stop,
              "config": cfg.model_dump(mode="json")}
    atomic_write_json(paths.out / TRAIN_RESULT, result)
    return LocaliseTrainResult(**result)


def run_localise_evaluate(cfg: LocaliseEvalConfig) -> LocaliseEvalResult:
    """Evaluate localisation nets with the crop (Table 8) or dense (Table 9) protocol (paper A.1-A.2).

    Returns the summary written to ``loc_eval.json`` (a run of the same identity returns the saved one).

    Raises:
        UserError: bad checkpoints, classes that differ from the data's, data without boxes, no
            usable image, a bad blacklist, posteriors of other images.
    """
    from pipeline.data import open_data

    view = open_data(cfg.data, cfg.split, cfg.format)
    ident = evaluation_identity(cfg, view) if cfg.out else None
    saved = JsonRecord(Path(cfg.out or ".") / "loc_eval.json", "a localisation evaluation").saved(ident)
    if saved is not None:
        return LocaliseEvalResult(**{**saved, "status": "exists"})
    ev = open_evaluation(cfg, view)
    blacklist = read_blacklist(cfg.blacklist) if cfg.blacklist else set()
    total = min(len(view), cfg.limit) if cfg.limit else len(view)
    with Progress(total, f"localise {cfg.protocol}", enabled=cfg.progress) as ev.bar:
        records = crop_records(ev) if ev.rater is None else dense_records(ev)
    if not records:
        raise UserError(f"no usable image in {cfg.data} (split {view.split}): "
                        f"{ev.skips[0]['reason'] if ev.skips else 'empty split'}")
    for r in records:
        r["blacklisted"] = r["index"] in blacklist
    n_black = sum(r["blacklisted"] for r in records)
    skipped = {s["key"] for s in ev.skips if not s["reason"].startswith("box ")}  # images, not single boxes
    images = {"seen": ev.counts.get("images", 0), "evaluated": len(records), "localisation": len(records) - n_black,
              "blacklisted": n_black, "skipped": len(skipped)}
    mean = mean_errors(records, "error")
    dense = ev.rater_info is not None
    if not dense:
        rows = crop_rows(ev.net_infos, mean)
        table = crop_table(rows, view.split, images)
        cls_err = None
    else:
        rows = dense_rows(ev.net_infos, mean, mean_errors(records, "error_top1"), cfg.top_k, cfg.fusion_nets)
        classes_from = (f"saved posteriors ({cfg.posteriors_method}: {', '.join(cfg.posteriors)})" if cfg.posteriors
                        else f"the dense evaluation of {cfg.classifier}")
        table = dense_table(rows, view.split, cfg.top_k, images, classes_from)
        cls_err = float(np.mean([r["classification_error"] for r in records]))  # every image, blacklisted or not
    summary: dict[str, Any] = {
        "format": SUMMARY_FORMAT, "protocol": cfg.protocol,
        "data": {"path": cfg.data, "split": view.split, "kind": view.kind, "fingerprint": view.fingerprint,
                 "classes": list(view.classes)},
        "nets": ev.net_infos, "classifier": ev.rater_info,
        "top_classes_from": ({"posteriors": ev.top.source} if ev.top else
                             {"dense_evaluation": cfg.classifier} if dense else None),
        "top_k": cfg.top_k if dense else None, "iou_threshold": cfg.iou_threshold,
        "merge": cfg.merge.model_dump() | {"threshold_used": cfg.merge.t} if dense else None,
        "rows": rows, "classification_error": cls_err, "images": images,
        "blacklist": {"file": cfg.blacklist, "entries": len(blacklist),
                      "dropped": [r["key"] for r in records if r["blacklisted"]][:MAX_LISTED]},
        "boxes": {"clipped": ev.counts.get("boxes_clipped", 0), "skipped": ev.counts.get("boxes_skipped", 0)},
        "skips": skip_summary(ev.skips), "table": table, "config": cfg.model_dump(mode="json"),
    }
    if cfg.out:
        write_evaluation(cfg, records, summary, ident)
    return LocaliseEvalResult(**summary)

