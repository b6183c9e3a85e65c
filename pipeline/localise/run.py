"""The localisation stages (paper Appendix A): training (A.1) and the two testing protocols (A.1-A.2, Tables 8-9).

Outputs, resume and reuse: docs/formats.md section 4.9.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline.errors import UserError
from pipeline.io import atomic_write_json, sha256_file
from pipeline.localise.config import LocaliseEvalConfig, LocaliseTrainConfig
from pipeline.localise.net import load_classifier, localisation_net
from pipeline.localise.protocols import Runner
from pipeline.localise.records import evaluation_identity, image_records, open_evaluation, summarise, write_evaluation
from pipeline.localise.selection import class_names
from pipeline.localise.training import LOCALISE_RESUME_FREE, BoxRegression, TrainingRun
from pipeline.preprocess import normalization_of, train_scale_of
from pipeline.results import TRAIN_RESULT, LocaliseEvalResult, LocaliseTrainResult
from pipeline.reuse import JsonRecord
from pipeline.runtime import DistEnv, Progress
from pipeline.train.checkpoints import RunPaths
from pipeline.train.engine import Engine, Plan
from pipeline.train.recipe import freeze_conv

__all__ = ["run_localise_train", "run_localise_evaluate"]


def run_localise_train(cfg: LocaliseTrainConfig) -> LocaliseTrainResult:
    """Fine-tune a localisation net from a classification checkpoint (paper A.1); a killed run continues, a
    finished one returns its result (docs/formats.md 4.9)."""
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
                         resume_mid_epoch=False, resume_keys={"optimizer", "epoch", "history", "stop"},
                         resume_free=LOCALISE_RESUME_FREE))  # resumes at epoch ends
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
    """Evaluate localisation nets with the crop (Table 8) or dense (Table 9) protocol (paper A.1-A.2); a run of the
    same identity returns the saved ``loc_eval.json``."""
    from pipeline.data import open_data

    view = open_data(cfg.data, cfg.split, cfg.format)
    ident = evaluation_identity(cfg, view) if cfg.out else None
    saved = JsonRecord(Path(cfg.out or ".") / "loc_eval.json", "a localisation evaluation").saved(ident)
    if saved is not None:
        return LocaliseEvalResult(**{**saved, "status": "exists"})
    ev = open_evaluation(cfg, view)
    total = min(len(view), cfg.limit) if cfg.limit else len(view)
    with Progress(total, f"localise {cfg.protocol}", enabled=cfg.progress) as ev.bar:
        records = image_records(ev)
    summary = summarise(ev, records)
    if cfg.out:
        write_evaluation(cfg, records, summary, ident)
    return LocaliseEvalResult(**summary)

