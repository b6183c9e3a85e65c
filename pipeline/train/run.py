"""``run_train``: the paper's training procedure (3.1) on one process or many ranks (3.3); every input check runs
before the first SGD step, on every rank, and rank 0 writes the run folder (docs/training.md)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.io import atomic_write_json
from pipeline.models import build_model
from pipeline.preprocess import Normalization
from pipeline.results import TRAIN_RESULT, TrainResult
from pipeline.runtime import DistEnv, compute_threads, resolve_bf16, start_distributed, stop_distributed, torch_threads
from pipeline.train.checkpoints import RunPaths
from pipeline.train.classification import ClassificationTask, TrainSetup
from pipeline.train.config import RESUME_FREE, TrainConfig
from pipeline.train.distributed import broadcast_error
from pipeline.train.engine import Engine, Plan, Position
from pipeline.train.loader import TrainStream, epoch_micro_batches, open_shards
from pipeline.train.recipe import batch_split, initialise
from pipeline.transforms import CentreCropView, ColourShift, TrainAugment

__all__ = ["run_train"]


def run_train(cfg: TrainConfig) -> TrainResult:
    """Train a VGG net as ``cfg`` says (single process, or one rank of a torchrun job): the run's paths and
    numbers, which rank 0 also writes to ``out/train.json``. Bad input is a UserError before any training step."""
    env = start_distributed(cfg.runtime.device)
    try:
        with torch_threads(_threads(cfg, env)):
            err, setup = None, None
            try:
                setup = _setup(cfg, env)
            except UserError as e:
                err = str(e)
            err = broadcast_error(err, env)  # every rank stops, with the same message
            if err or setup is None:
                raise UserError(err)
            task = ClassificationTask(setup)
            pos = setup.engine.run(task, cfg)
            result = _result(setup, task, pos)
        if env.main:
            atomic_write_json(result.result_json, result.model_dump(mode="json"), indent=2)
        stop_distributed(env, finished=True)
        return result
    finally:
        stop_distributed(env)


def _threads(cfg: TrainConfig, env: DistEnv) -> int | None:
    """CPU threads: as configured, else on CPU the cores left to this rank after its loader workers."""
    if cfg.runtime.threads or env.device.type != "cpu":
        return cfg.runtime.threads
    return compute_threads(cfg.data.workers, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def _setup(cfg: TrainConfig, env: DistEnv) -> TrainSetup:
    """The checked inputs of a run: data, normalisation, batch split, augmentation, the run folder, the net."""
    d = cfg.data
    shards = open_shards(d.shards, [d.train_split] + ([d.val_split] if d.val_split else []))
    if cfg.model.num_classes != len(shards.classes):
        raise UserError(f"model.num_classes={cfg.model.num_classes} but {d.shards} has {len(shards.classes)} classes")
    norm = _normalization(cfg, shards.stats)
    colour = ColourShift.from_stats(shards.stats, alpha_std=d.colour_shift) if d.colour_shift > 0 else None
    _, micro, accum = batch_split(cfg.optim.batch_size, env.world, cfg.optim.micro_batch)
    steps, micro_batches = epoch_micro_batches(d.epoch_images or shards.count(d.train_split), cfg.optim.batch_size,
                                               accum)
    augment = TrainAugment(scale=d.scale, crop=cfg.model.crop, flip=d.flip, colour=colour, draft=d.draft,
                           decode_device=TrainAugment.decode_device_for(d.decode, env.device))
    stream = TrainStream(shards, d.train_split, augment, micro, micro_batches, seed=cfg.seed,
                         shardshuffle=d.shardshuffle, shuffle_buffer=d.shuffle_buffer, workers=d.workers,
                         pin_memory=cfg.runtime.pin_memory and env.device.type == "cuda")
    for p in (cfg.init.net_a, cfg.init.checkpoint):
        if p and not Path(p).is_file():
            raise UserError(f"init checkpoint not found: {p}")
    show = cfg.progress if cfg.progress is not None else sys.stderr.isatty()  # else the metrics rows are the log
    engine = Engine(RunPaths(cfg.out), env, Plan(
        "train", cfg.schedule.max_epochs, cfg.schedule.max_steps, steps, epoch_images=steps * cfg.optim.batch_size,
        step_images=cfg.optim.batch_size, log_every=cfg.log_every, checkpoint_every=cfg.checkpoint_every,
        progress=show, resume_keys={"position", "optimizer"}, resume_free=RESUME_FREE))
    resume = engine.resume_checkpoint(cfg.resume, cfg.model_dump(mode="json"), shards.fingerprint, "shards")
    model = build_model(cfg.model)  # initialising checks the init checkpoints (classes, shapes)
    if resume is None:
        init_info = initialise(model, cfg.init, shards.classes)
    else:
        model.load_state_dict(resume["state_dict"])
        init_info = (resume.get("meta") or {}).get("init", {})
    return TrainSetup(cfg, env, shards, norm, stream, accum, steps, CentreCropView(
        q=cfg.test_scale(), crop=cfg.model.crop, draft=d.draft), engine, model, init_info, resume,
        bf16=resolve_bf16(cfg.runtime.bf16, env.device))


def _normalization(cfg: TrainConfig, stats: dict[str, Any] | None) -> Normalization:
    """The input normalisation: the configured mean / std, or the shards' statistics."""
    d, stats = cfg.data, stats or {}
    if d.mean == "stats" and "mean" not in stats:
        raise UserError(f"{d.shards} has no statistics for the mean RGB: run `vgg stats {d.shards}` "
                        "(or set data.mean=[r,g,b])")
    if d.std == "stats" and "cov" not in stats:
        raise UserError(f"{d.shards} has no statistics for data.std=stats: run `vgg stats {d.shards}`")
    mean = tuple(float(v) for v in stats["mean"]) if d.mean == "stats" else d.mean
    std = tuple(max(1e-3, float(stats["cov"][i][i]) ** 0.5) for i in range(3)) if d.std == "stats" else d.std
    return Normalization(mean=mean, std=std)


def _result(setup: TrainSetup, task: ClassificationTask, pos: Position) -> TrainResult:
    schedule, paths, engine = task.schedule, setup.engine.paths, setup.engine
    best = schedule.best if schedule.best >= 0 else None
    return TrainResult(
        out=str(paths.out), last=str(paths.last), best=str(paths.best) if paths.best.exists() else None,
        metrics=str(paths.metrics), config=str(paths.config), result_json=str(paths.out / TRAIN_RESULT),
        best_top1=best, best_epoch=schedule.best_epoch if best is not None else None, final=task.last_val,
        epochs=pos.epoch, steps=pos.step, stop=pos.stop, lr_drops=schedule.drops, wall_s=round(engine.wall(), 2),
        images_per_s=engine.images_per_s(), world_size=setup.env.world, bf16=setup.bf16)
