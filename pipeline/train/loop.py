"""``run_train``: the paper's training procedure (3.1) on one process or many ranks (3.3).

Every check on the inputs (shards, statistics, batch split, resume checkpoint, init checkpoints)
runs before the first SGD step, on every rank; an error on any rank stops all of them with the
same one-line message. Rank 0 writes ``config.yaml``, ``metrics.jsonl`` and the checkpoints.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from pipeline.config import save_config
from pipeline.errors import UserError
from pipeline.io import atomic_write_json
from pipeline.models import build_model
from pipeline.preprocess import Normalization
from pipeline.results import TRAIN_RESULT, TrainResult
from pipeline.runtime import (
    DistEnv,
    Progress,
    autocast,
    compute_threads,
    resolve_bf16,
    start_distributed,
    stop_distributed,
    torch_threads,
)
from pipeline.train.checkpoints import RunPaths, clean_stale_tmp, load_resume, save_best, save_last, truncate_metrics
from pipeline.train.config import TrainConfig
from pipeline.train.distributed import all_reduce_sum, broadcast_error
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
    """One training run: checked inputs, model, optimizer, schedule and position."""

    def __init__(self, cfg: TrainConfig, env: DistEnv) -> None:
        self.cfg, self.env = cfg, env
        self.paths = RunPaths(cfg.out)
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
        stats = self.shards.stats
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
        self.norm = Normalization(mean=mean, std=std)
        colour = ColourShift.from_stats(stats, alpha_std=d.colour_shift) if d.colour_shift > 0 else None
        self.share, self.micro, self.accum = batch_split(cfg.optim.batch_size, env.world, cfg.optim.micro_batch)
        n_epoch = d.epoch_images or self.shards.count(d.train_split)
        self.steps_per_epoch, self.micro_per_epoch = epoch_micro_batches(n_epoch, cfg.optim.batch_size, self.accum)
        self.augment = TrainAugment(scale=d.scale, crop=cfg.model.crop, flip=d.flip, colour=colour, draft=d.draft,
                                    decode_device=TrainAugment.decode_device_for(d.decode, env.device))
        self.view = CentreCropView(q=cfg.test_scale(), crop=cfg.model.crop, draft=d.draft)
        for p in (cfg.init.net_a, cfg.init.checkpoint):
            if p and not Path(p).is_file():
                raise UserError(f"init checkpoint not found: {p}")
        self.resume_ck = None
        if cfg.resume and self.paths.last.exists():
            self.resume_ck = load_resume(self.paths, cfg, self.shards.fingerprint)
        elif cfg.resume:
            self._log(f"--resume: no checkpoint in {cfg.out} yet, starting from the beginning")
        elif self.paths.last.exists():
            raise UserError(
                f"{cfg.out} already holds a training run: pass --resume to continue it, or choose another out"
            )
        if env.main:
            clean_stale_tmp(self.paths)  # left by a run killed while writing a checkpoint
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
        net: torch.nn.Module = model
        if env.world > 1:
            net = DDP(model, device_ids=[env.device.index] if env.device.type == "cuda" else None)
        self.ddp = net if env.world > 1 else None
        self.net = torch.compile(net) if cfg.runtime.compile else net
        self.schedule = PlateauSchedule.from_config(cfg.optim.lr, cfg.schedule)
        self.opt = build_optimizer(model, cfg.optim, cfg.optim.lr)
        self.epoch, self.step_in_epoch, self.step, self.wall_prior = 0, 0, 0, 0.0
        self.finished, self.last_val, self.stop_reason = False, None, ""
        if self.resume_ck is not None:
            ck = self.resume_ck
            self.opt.load_state_dict(ck["optimizer"])
            self.schedule.load_state_dict(ck["schedule"])
            pos = ck["position"]
            self.epoch, self.step_in_epoch, self.step = pos["epoch"], pos["step_in_epoch"], pos["step"]
            self.wall_prior, self.finished = pos.get("wall_s", 0.0), pos.get("finished", False)
            self.last_val, self.stop_reason = pos.get("last_val"), pos.get("stop", "")
            if self.finished and self._limit_raised():  # `--resume --set schedule.max_epochs=...`: train longer
                self._log(f"--resume: the run stopped at {self.stop_reason}; continuing to the new limit")
                self.finished, self.stop_reason = False, ""
            torch.set_rng_state(ck["rng"]["torch"])
            set_lr(self.opt, self.schedule.lr)
            self.resume_ck = None  # free the memory

    def _limit_raised(self) -> bool:
        """Whether a run stopped by its epoch or step limit may go on under this config's higher limit."""
        sched = self.cfg.schedule
        if self.stop_reason.startswith("max_epochs"):
            return self.epoch < sched.max_epochs and (sched.max_steps is None or self.step < sched.max_steps)
        if self.stop_reason.startswith("max_steps"):
            return sched.max_steps is None or self.step < sched.max_steps
        return False

    def meta(self) -> dict[str, Any]:
        s = self.cfg.data.scale
        return {
            "normalization": self.norm.model_dump(mode="json"),
            "train_scale": {"s_min": s.s_min, "s_max": s.s_max},
            "classes": self.shards.classes,
            "dataset_fingerprint": self.shards.fingerprint,
            "config": self.cfg.model_dump(mode="json"),
            "init": self.init_info,
            "epoch": self.epoch,
            "step": self.step,
            "val": self.last_val,
        }

    # -- output ---------------------------------------------------------------------------------
    def _log(self, msg: str) -> None:
        if self.env.main:
            print(msg, file=sys.stderr, flush=True)

    def _metric(self, row: dict[str, Any]) -> None:
        if self.env.main:
            with open(self.paths.metrics, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")

    def _save_last(self) -> None:
        if self.env.main:
            pos = {
                "epoch": self.epoch,
                "step_in_epoch": self.step_in_epoch,
                "step": self.step,
                "wall_s": self.wall(),
                "finished": self.finished,
                "last_val": self.last_val,
                "stop": self.stop_reason,
            }
            save_last(self.paths, self.model, self.meta(), optimizer=self.opt,
                      schedule=self.schedule.state_dict(), position=pos)

    def wall(self) -> float:
        return self.wall_prior + (time.perf_counter() - self.t0)

    # -- training -------------------------------------------------------------------------------
    def _sgd_step(self, micro_batches: list[tuple[torch.Tensor, ...]]) -> torch.Tensor:
        dev = self.env.device
        torch.manual_seed(_seed_of(self.cfg.seed, self.env.rank, self.step))  # dropout masks: reproducible
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
        return total

    def _progress(self) -> Progress:
        """This epoch's progress (rank 0; by default only on a terminal: the metrics rows are the log)."""
        show = self.cfg.progress if self.cfg.progress is not None else sys.stderr.isatty()
        return Progress(self.steps_per_epoch, f"train epoch {self.epoch + 1}", enabled=show and self.env.main,
                        unit="steps", start=self.step_in_epoch)

    def _epoch(self, bar: Progress) -> bool:
        """Train the rest of the current epoch; True if max_steps was reached."""
        cfg, d = self.cfg, self.cfg.data
        loader = train_loader(
            self.shards, d.train_split, augment=self.augment, micro_batch=self.micro,
            micro_batches=self.micro_per_epoch, skip=self.step_in_epoch * self.accum, seed=cfg.seed,
            epoch=self.epoch, shardshuffle=d.shardshuffle, shuffle_buffer=d.shuffle_buffer, workers=d.workers,
            pin_memory=cfg.runtime.pin_memory and self.env.device.type == "cuda")
        it = iter(loader)
        t_log, n_log, loss_sum = time.perf_counter(), 0, torch.zeros((), device=self.env.device)
        train_mode(self.model, self.cfg.init.trainable)
        while self.step_in_epoch < self.steps_per_epoch:
            loss_sum += self._sgd_step([next(it) for _ in range(self.accum)])
            self.step += 1
            self.step_in_epoch += 1
            n_log += 1
            if n_log == cfg.log_every or self.step_in_epoch == self.steps_per_epoch:
                loss = all_reduce_sum([float(loss_sum)], self.env)[0] / (n_log * self.env.world)
                ips = n_log * cfg.optim.batch_size / (time.perf_counter() - t_log)
                self._metric({"kind": "train", "epoch": self.epoch + 1, "step": self.step, "loss": loss,
                              "lr": self.schedule.lr, "images_per_s": ips, "wall_s": self.wall()})
                self.train_time += time.perf_counter() - t_log
                self.train_images += n_log * cfg.optim.batch_size
                bar.note(f"loss {loss:.3f} lr {self.schedule.lr:.0e} {ips:.0f} img/s")
                t_log, n_log, loss_sum = time.perf_counter(), 0, torch.zeros((), device=self.env.device)
            bar.advance(1)
            if (
                cfg.checkpoint_every
                and self.step % cfg.checkpoint_every == 0
                and self.step_in_epoch < self.steps_per_epoch
            ):
                self._save_last()
            if cfg.schedule.max_steps and self.step >= cfg.schedule.max_steps:
                return True
        return False

    def _end_epoch(self, max_steps_hit: bool) -> None:
        cfg = self.cfg
        row: dict[str, Any] = {"kind": "val" if cfg.data.val_split else "epoch", "epoch": self.epoch + 1,
                               "step": self.step, "lr": self.schedule.lr}
        improved = False
        if cfg.data.val_split:
            loader = val_loader(self.shards, cfg.data.val_split, view=self.view, batch=self.micro, rank=self.env.rank,
                                world=self.env.world, workers=cfg.data.workers,
                                pin_memory=cfg.runtime.pin_memory and self.env.device.type == "cuda")
            self.last_val = validate(self.model, loader, self.env, self.norm, bf16=self.bf16,
                                     channels_last=cfg.runtime.channels_last)
            event = self.schedule.update(self.last_val["top1"], self.epoch + 1)
            improved = event == "improved"
            set_lr(self.opt, self.schedule.lr)
            row.update(self.last_val, event=event, lr_next=self.schedule.lr)
            self._log(
                f"epoch {self.epoch + 1}: val top-1 {self.last_val['top1']:.4f} top-5 {self.last_val['top5']:.4f} "
                f"({event}; lr {self.schedule.lr:.1e}) step {self.step} {self.wall():.0f}s"
            )
        row["wall_s"] = self.wall()
        self._metric(row)
        self.epoch += 1
        self.step_in_epoch = 0
        if self.schedule.stopped:
            self.stop_reason = f"val top-1 stopped improving after {self.schedule.drops} lr drops"
        elif max_steps_hit:
            self.stop_reason = f"max_steps {cfg.schedule.max_steps}"
        elif self.epoch >= cfg.schedule.max_epochs:
            self.stop_reason = f"max_epochs {cfg.schedule.max_epochs}"
        self.finished = bool(self.stop_reason)
        if improved and self.env.main:
            save_best(self.paths, self.model, self.meta())
        self._save_last()

    def train(self) -> TrainResult:
        cfg, env = self.cfg, self.env
        self.t0 = time.perf_counter()
        self.train_time, self.train_images = 0.0, 0
        if env.main:
            self.paths.ckpt_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.paths.config)
            if self.step:
                truncate_metrics(self.paths.metrics, self.step)
            else:
                self.paths.metrics.unlink(missing_ok=True)
        if self.finished:
            self._log(f"{cfg.out}: run already finished ({self.stop_reason})")
        while not self.finished:
            with self._progress() as bar:
                hit = self._epoch(bar)
            self._end_epoch(hit)
        return self.summary()

    def summary(self) -> TrainResult:
        best = self.schedule.best if self.schedule.best >= 0 else None
        return TrainResult(
            out=str(self.paths.out), last=str(self.paths.last),
            best=str(self.paths.best) if self.paths.best.exists() else None,
            metrics=str(self.paths.metrics), config=str(self.paths.config),
            result_json=str(self.paths.out / TRAIN_RESULT),
            best_top1=best, best_epoch=self.schedule.best_epoch if best is not None else None,
            final=self.last_val, epochs=self.epoch, steps=self.step, stop=self.stop_reason,
            lr_drops=self.schedule.drops, wall_s=round(self.wall(), 2),
            images_per_s=round(self.train_images / self.train_time, 1) if self.train_time else None,
            world_size=self.env.world, bf16=self.bf16,
        )
