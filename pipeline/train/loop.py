"""``run_train``: the paper's training procedure (3.1) on one process or many ranks (3.3).

Every check on the inputs (shards, statistics, batch split, resume checkpoint, init checkpoints)
runs before the first SGD step, on every rank; an error on any rank stops all of them with the
same one-line message. Rank 0 writes ``config.yaml``, ``metrics.jsonl`` and the checkpoints.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from pipeline.errors import UserError
from pipeline.io import atomic_write_json
from pipeline.models import build_model
from pipeline.preprocess import Normalization
from pipeline.results import TRAIN_RESULT, TrainResult
from pipeline.runtime import (
    DistEnv,
    autocast,
    compute_threads,
    resolve_bf16,
    start_distributed,
    stop_distributed,
    torch_threads,
)
from pipeline.train.checkpoints import RunPaths
from pipeline.train.config import RESUME_FREE, TrainConfig
from pipeline.train.distributed import broadcast_error
from pipeline.train.engine import Engine, EpochEnd, Plan, Position, wrap_model
from pipeline.train.loader import ShardSet, epoch_micro_batches, open_shards, train_loader, val_loader
from pipeline.train.recipe import (
    PlateauSchedule,
    batch_split,
    build_optimizer,
    freeze_conv,
    initialise,
    set_lr,
    train_mode,
)
from pipeline.train.validate import validate
from pipeline.transforms import CentreCropView, ColourShift, TrainAugment, colour_shift_and_normalize

__all__ = ["run_train"]


def run_train(cfg: TrainConfig) -> TrainResult:
    """Train a VGG net as ``cfg`` says (single process, or one rank of a torchrun job).

    Args:
        cfg: the resolved training config.
    Returns:
        The run's paths (``out``, ``last``, ``best``, ``metrics``, ``config``) and numbers
        (``best_top1``, ``best_epoch``, ``final`` val metrics, ``epochs``, ``steps``, ``stop``,
        ``wall_s``, ``images_per_s``); rank 0 also writes it to ``out/train.json``.
    Raises:
        UserError: bad input, before any training step.
    """
    env = start_distributed(cfg.runtime.device)
    try:
        with torch_threads(_threads(cfg, env)):
            result = _Run(cfg, env).train()
        if env.main:
            atomic_write_json(result.result_json, result.model_dump(mode="json"), indent=2)
        return result
    finally:
        stop_distributed(env)


def _threads(cfg: TrainConfig, env: DistEnv) -> int | None:
    """CPU threads: as configured, else on CPU the cores left to this rank after its loader workers."""
    if cfg.runtime.threads:
        return cfg.runtime.threads
    if env.device.type == "cpu":
        return compute_threads(cfg.data.workers, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return None


def _seed_of(*parts: int) -> int:
    h = 1469598103934665603
    for p in parts:
        h = ((h ^ (p & 0xFFFFFFFFFFFF)) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h & 0x7FFFFFFFFFFFFFFF


class _Run:
    """One classification run: checked inputs, model, optimizer and schedule; the engine's task."""

    def __init__(self, cfg: TrainConfig, env: DistEnv) -> None:
        self.cfg, self.env = cfg, env
        err = None
        try:
            self._check_inputs()
        except UserError as e:
            err = str(e)
        err = broadcast_error(err, env)  # every rank stops, with the same message
        if err:
            raise UserError(err)
        self._build()

    # -- inputs ---------------------------------------------------------------------------------
    def _check_inputs(self) -> None:
        cfg, env = self.cfg, self.env
        d = cfg.data
        splits = [d.train_split] + ([d.val_split] if d.val_split else [])
        self.shards: ShardSet = open_shards(d.shards, splits)
        classes = self.shards.classes
        if cfg.model.num_classes != len(classes):
            raise UserError(f"model.num_classes={cfg.model.num_classes} but {d.shards} has {len(classes)} classes")
        self.norm = _normalization(cfg, self.shards.stats)
        colour = ColourShift.from_stats(self.shards.stats, alpha_std=d.colour_shift) if d.colour_shift > 0 else None
        self.share, self.micro, self.accum = batch_split(cfg.optim.batch_size, env.world, cfg.optim.micro_batch)
        n_epoch = d.epoch_images or self.shards.count(d.train_split)
        self.steps_per_epoch, self.micro_per_epoch = epoch_micro_batches(n_epoch, cfg.optim.batch_size, self.accum)
        self.augment = TrainAugment(scale=d.scale, crop=cfg.model.crop, flip=d.flip, colour=colour, draft=d.draft,
                                    decode_device=TrainAugment.decode_device_for(d.decode, env.device))
        self.view = CentreCropView(q=cfg.test_scale(), crop=cfg.model.crop, draft=d.draft)
        for p in (cfg.init.net_a, cfg.init.checkpoint):
            if p and not Path(p).is_file():
                raise UserError(f"init checkpoint not found: {p}")
        show = cfg.progress if cfg.progress is not None else sys.stderr.isatty()  # else the metrics rows are the log
        self.engine = Engine(RunPaths(cfg.out), env, Plan(
            "train", cfg.schedule.max_epochs, cfg.schedule.max_steps, self.steps_per_epoch,
            epoch_images=self.steps_per_epoch * cfg.optim.batch_size, step_images=cfg.optim.batch_size,
            log_every=cfg.log_every, checkpoint_every=cfg.checkpoint_every, progress=show))
        self.resume_ck = self.engine.resume_checkpoint(cfg.resume, cfg.model_dump(mode="json"), RESUME_FREE,
                                                       {"position", "optimizer"}, self.shards.fingerprint, "shards")
        self.model = build_model(cfg.model)  # initialising checks the init checkpoints (classes, shapes)
        if self.resume_ck is None:
            self.init_info = initialise(self.model, cfg.init, classes)
        else:
            self.model.load_state_dict(self.resume_ck["state_dict"])
            self.init_info = (self.resume_ck.get("meta") or {}).get("init", {})

    # -- model, optimizer, schedule -------------------------------------------------------------
    def _build(self) -> None:
        cfg, env = self.cfg, self.env
        self.bf16 = resolve_bf16(cfg.runtime.bf16, env.device)
        model = self.model
        model.to(env.device)
        if cfg.runtime.channels_last:
            model.to(memory_format=torch.channels_last)
        freeze_conv(model, cfg.init.trainable)  # before DDP: it registers only parameters with a gradient
        self.net, self.ddp = wrap_model(model, env, cfg.runtime.compile)
        self.schedule = PlateauSchedule.from_config(cfg.optim.lr, cfg.schedule)
        self.opt = build_optimizer(model, cfg.optim, cfg.optim.lr)
        self.last_val: dict[str, float] | None = None
        if self.resume_ck is not None:
            ck = self.resume_ck
            self.opt.load_state_dict(ck["optimizer"])
            self.schedule.load_state_dict(ck["schedule"])
            pos = ck["position"]
            self.last_val = pos.get("last_val")
            self.engine.resume_at(Position(pos["epoch"], pos["step_in_epoch"], pos["step"], pos.get("wall_s", 0.0),
                                           pos.get("finished", False), pos.get("stop", "")))
            torch.set_rng_state(ck["rng"]["torch"])
            set_lr(self.opt, self.schedule.lr)
            self.resume_ck = None  # free the memory

    @property
    def lr(self) -> float:
        return self.schedule.lr

    def meta(self) -> dict[str, Any]:
        s, pos = self.cfg.data.scale, self.engine.pos
        return {
            "normalization": self.norm.model_dump(mode="json"),
            "train_scale": {"s_min": s.s_min, "s_max": s.s_max},
            "classes": self.shards.classes,
            "dataset_fingerprint": self.shards.fingerprint,
            "config": self.cfg.model_dump(mode="json"),
            "init": self.init_info,
            "epoch": pos.epoch,
            "step": pos.step,
            "val": self.last_val,
        }

    def state(self, pos: Position) -> dict[str, Any]:
        position = {"epoch": pos.epoch, "step_in_epoch": pos.step_in_epoch, "step": pos.step,
                    "wall_s": self.engine.wall(), "finished": pos.finished, "last_val": self.last_val,
                    "stop": pos.stop}
        return {"schedule": self.schedule.state_dict(), "position": position, "rng": {"torch": torch.get_rng_state()}}

    # -- training -------------------------------------------------------------------------------
    def start_epoch(self, epoch: int) -> None:
        train_mode(self.model, self.cfg.init.trainable)

    def batches(self, epoch: int, skip: int) -> Iterator[list[tuple[torch.Tensor, ...]]]:
        """The rest of the epoch's steps, each ``accum`` micro-batches."""
        cfg, d = self.cfg, self.cfg.data
        loader = train_loader(
            self.shards, d.train_split, augment=self.augment, micro_batch=self.micro,
            micro_batches=self.micro_per_epoch, skip=skip * self.accum, seed=cfg.seed,
            epoch=epoch, shardshuffle=d.shardshuffle, shuffle_buffer=d.shuffle_buffer, workers=d.workers,
            pin_memory=cfg.runtime.pin_memory and self.env.device.type == "cuda")
        it = iter(loader)
        for _ in range(skip, self.steps_per_epoch):
            yield [next(it) for _ in range(self.accum)]

    def step(self, micro_batches: list[tuple[torch.Tensor, ...]], step: int) -> tuple[torch.Tensor, int]:
        dev = self.env.device
        torch.manual_seed(_seed_of(self.cfg.seed, self.env.rank, step))  # dropout masks: reproducible
        total = torch.zeros((), device=dev)
        amp = autocast(dev, self.bf16)
        for i, (x, y, off) in enumerate(micro_batches):
            x = colour_shift_and_normalize(x.to(dev, non_blocking=True), off, self.norm)
            if self.cfg.runtime.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = y.to(dev, non_blocking=True)
            sync = (
                self.ddp.no_sync()
                if (self.ddp is not None and i < len(micro_batches) - 1)
                else contextlib.nullcontext()
            )
            with sync:
                with amp:
                    scores = self.net(x)
                loss = F.cross_entropy(scores.float(), y) / len(micro_batches)
                loss.backward()
            total += loss.detach()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return total, self.cfg.optim.batch_size

    def end_epoch(self, pos: Position) -> EpochEnd:
        """Validation (if a split is given): the plateau schedule's event and the epoch's row."""
        cfg = self.cfg
        row: dict[str, Any] = {"kind": "val" if cfg.data.val_split else "epoch", "epoch": pos.epoch + 1,
                               "step": pos.step, "lr": self.schedule.lr}
        event = ""
        if cfg.data.val_split:
            loader = val_loader(self.shards, cfg.data.val_split, view=self.view, batch=self.micro, rank=self.env.rank,
                                world=self.env.world, workers=cfg.data.workers,
                                pin_memory=cfg.runtime.pin_memory and self.env.device.type == "cuda")
            self.last_val = validate(self.model, loader, self.env, self.norm, bf16=self.bf16,
                                     channels_last=cfg.runtime.channels_last)
            event = self.schedule.update(self.last_val["top1"], pos.epoch + 1)
            set_lr(self.opt, self.schedule.lr)
            row.update(self.last_val, event=event, lr_next=self.schedule.lr)
            self.engine.log(
                f"epoch {pos.epoch + 1}: val top-1 {self.last_val['top1']:.4f} top-5 {self.last_val['top5']:.4f} "
                f"({event}; lr {self.schedule.lr:.1e}) step {pos.step} {self.engine.wall():.0f}s"
            )
        row["wall_s"] = self.engine.wall()
        stop = f"val top-1 stopped improving after {self.schedule.drops} lr drops" if self.schedule.stopped else ""
        return EpochEnd(row, improved=event == "improved", stop=stop)

    def train(self) -> TrainResult:
        pos = self.engine.run(self, self.cfg)
        best = self.schedule.best if self.schedule.best >= 0 else None
        paths = self.engine.paths
        return TrainResult(
            out=str(paths.out), last=str(paths.last),
            best=str(paths.best) if paths.best.exists() else None,
            metrics=str(paths.metrics), config=str(paths.config),
            result_json=str(paths.out / TRAIN_RESULT),
            best_top1=best, best_epoch=self.schedule.best_epoch if best is not None else None,
            final=self.last_val, epochs=pos.epoch, steps=pos.step, stop=pos.stop,
            lr_drops=self.schedule.drops, wall_s=round(self.engine.wall(), 2),
            images_per_s=self.engine.images_per_s(), world_size=self.env.world, bf16=self.bf16,
        )


def _normalization(cfg: TrainConfig, stats: dict[str, Any] | None) -> Normalization:
    """The input normalisation: the configured mean / std, or the shards' statistics."""
    d = cfg.data
    if d.mean == "stats":
        if not stats or "mean" not in stats:
            raise UserError(f"{d.shards} has no statistics for the mean RGB: run `vgg stats {d.shards}` "
                            "(or set data.mean=[r,g,b])")
        mean = tuple(float(v) for v in stats["mean"])
    else:
        mean = d.mean
    if d.std == "stats":
        if not stats or "cov" not in stats:
            raise UserError(f"{d.shards} has no statistics for data.std=stats: run `vgg stats {d.shards}`")
        std = tuple(max(1e-3, float(stats["cov"][i][i]) ** 0.5) for i in range(3))
    else:
        std = d.std
    return Normalization(mean=mean, std=std)
