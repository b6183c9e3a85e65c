"""Classification training (paper 3.1, 3.3): :class:`ClassificationTask`, the training engine's task: mini-batch
SGD over the global batch with gradient accumulation and DDP, and the validation top-1 the plateau schedule
watches (exact over ranks); docs/training.md."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from pipeline.models import VGG
from pipeline.preprocess import Normalization, normalize
from pipeline.runtime import DistEnv, autocast
from pipeline.train.config import TrainConfig
from pipeline.train.distributed import all_reduce_sum
from pipeline.train.engine import Engine, EpochEnd, Position, wrap_model
from pipeline.train.loader import ShardSet, TrainStream, train_loader, val_loader
from pipeline.train.recipe import PlateauSchedule, build_optimizer, freeze_conv, set_lr, train_mode
from pipeline.transforms import CentreCropView, colour_shift_and_normalize

__all__ = ["TrainSetup", "ClassificationTask", "topk_correct"]


@dataclass
class TrainSetup:
    """A run's checked inputs: the config, this rank, the data and its views, the batch split, the net."""

    cfg: TrainConfig
    env: DistEnv
    shards: ShardSet
    norm: Normalization
    stream: TrainStream  #: the training batches (micro-batches of ``stream.micro_batch`` images)
    accum: int  #: micro-batches per SGD step on this rank
    steps_per_epoch: int
    view: CentreCropView  #: validation centre crops
    engine: Engine
    model: VGG  #: initialised, or holding the weights of ``resume``
    init_info: dict[str, Any]
    resume: dict[str, Any] | None  #: the ``last.pt`` to continue from
    bf16: bool


def _seed_of(*parts: int) -> int:
    h = 1469598103934665603
    for p in parts:
        h = ((h ^ (p & 0xFFFFFFFFFFFF)) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h & 0x7FFFFFFFFFFFFFFF


class ClassificationTask:
    """One classification run's model, optimiser and schedule on this rank; the engine's task."""

    def __init__(self, setup: TrainSetup) -> None:
        self.setup, cfg, env = setup, setup.cfg, setup.env
        self.model = model = setup.model
        model.to(env.device)
        if cfg.runtime.channels_last:
            model.to(memory_format=torch.channels_last)
        freeze_conv(model, cfg.init.trainable)  # before DDP: it registers only parameters with a gradient
        self.net, self.ddp = wrap_model(model, env, cfg.runtime.compile)
        self.schedule = PlateauSchedule.from_config(cfg.optim.lr, cfg.schedule)
        self.opt = build_optimizer(model, cfg.optim, cfg.optim.lr)
        self.last_val: dict[str, float] | None = None
        ck, setup.resume = setup.resume, None  # free the memory
        if ck is not None:
            self.opt.load_state_dict(ck["optimizer"])
            self.schedule.load_state_dict(ck["schedule"])
            self.last_val = ck["position"]["last_val"]
            setup.engine.resume_at(Position(**{k: v for k, v in ck["position"].items() if k != "last_val"}))
            torch.set_rng_state(ck["rng"]["torch"])
            set_lr(self.opt, self.schedule.lr)

    @property
    def lr(self) -> float:
        return self.schedule.lr

    def meta(self) -> dict[str, Any]:
        setup, pos = self.setup, self.setup.engine.pos
        s = setup.cfg.data.scale
        return {"normalization": setup.norm.model_dump(mode="json"),
                "train_scale": {"s_min": s.s_min, "s_max": s.s_max}, "classes": setup.shards.classes,
                "dataset_fingerprint": setup.shards.fingerprint, "config": setup.cfg.model_dump(mode="json"),
                "init": setup.init_info, "epoch": pos.epoch, "step": pos.step, "val": self.last_val}

    def state(self, pos: Position) -> dict[str, Any]:
        position = {**asdict(pos), "wall_s": self.setup.engine.wall(), "last_val": self.last_val}
        return {"schedule": self.schedule.state_dict(), "position": position, "rng": {"torch": torch.get_rng_state()}}

    def start_epoch(self, epoch: int) -> None:
        train_mode(self.model, self.setup.cfg.init.trainable)

    def batches(self, epoch: int, skip: int) -> Iterator[list[tuple[torch.Tensor, ...]]]:
        """The rest of the epoch's steps, each ``accum`` micro-batches."""
        accum = self.setup.accum
        it = iter(train_loader(self.setup.stream, epoch, skip * accum))
        for _ in range(skip, self.setup.steps_per_epoch):
            yield [next(it) for _ in range(accum)]

    def step(self, micro_batches: list[tuple[torch.Tensor, ...]], step: int) -> tuple[torch.Tensor, int]:
        """One SGD step: the micro-batches' gradients accumulated (synchronised over ranks on the last)."""
        cfg, dev = self.setup.cfg, self.setup.env.device
        torch.manual_seed(_seed_of(cfg.seed, self.setup.env.rank, step))  # dropout masks: reproducible
        total = torch.zeros((), device=dev)
        for i, (x, y, off) in enumerate(micro_batches):
            x = colour_shift_and_normalize(x.to(dev, non_blocking=True), off, self.setup.norm)
            if cfg.runtime.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            last = i == len(micro_batches) - 1
            with self.ddp.no_sync() if self.ddp is not None and not last else contextlib.nullcontext():
                with autocast(dev, self.setup.bf16):
                    scores = self.net(x)
                loss = F.cross_entropy(scores.float(), y.to(dev, non_blocking=True)) / len(micro_batches)
                loss.backward()
            total += loss.detach()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return total, cfg.optim.batch_size

    def end_epoch(self, pos: Position) -> EpochEnd:
        """Validation (if a split is given): the plateau schedule's event and the epoch's row."""
        setup, cfg, engine = self.setup, self.setup.cfg, self.setup.engine
        row: dict[str, Any] = {"kind": "val" if cfg.data.val_split else "epoch", "epoch": pos.epoch + 1,
                               "step": pos.step, "lr": self.schedule.lr}
        event = ""
        if cfg.data.val_split:
            loader = val_loader(setup.stream, cfg.data.val_split, setup.view, setup.env.rank, setup.env.world)
            self.last_val = val = self.validate(loader)
            event = self.schedule.update(val["top1"], pos.epoch + 1)
            set_lr(self.opt, self.schedule.lr)
            row.update(val, event=event, lr_next=self.schedule.lr)
            engine.log(f"epoch {pos.epoch + 1}: val top-1 {val['top1']:.4f} top-5 {val['top5']:.4f} "
                       f"({event}; lr {self.schedule.lr:.1e}) step {pos.step} {engine.wall():.0f}s")
        row["wall_s"] = engine.wall()
        stop = f"val top-1 stopped improving after {self.schedule.drops} lr drops" if self.schedule.stopped else ""
        return EpochEnd(row, improved=event == "improved", stop=stop)

    @torch.no_grad()
    def validate(self, loader: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
        """Top-1/top-5 accuracy and error of the net on centre crops, over all ranks' parts (each image counted
        once): the "validation set accuracy" the schedule watches."""
        env, model, was_training = self.setup.env, self.model, self.model.training
        model.eval()
        c1 = c5 = n = 0
        for x, y in loader:
            x = normalize(x.to(env.device, non_blocking=True), self.setup.norm)
            if self.setup.cfg.runtime.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(env.device, self.setup.bf16):
                scores = model(x).float()
            a, b = topk_correct(scores, y.to(env.device))
            c1, c5, n = c1 + a, c5 + b, n + len(y)
        c1, c5, n = all_reduce_sum([c1, c5, n], env)
        model.train(was_training)
        n = int(n)
        top1, top5 = (c1 / n, c5 / n) if n else (0.0, 0.0)
        return {"top1": top1, "top5": top5, "top1_err": 1 - top1, "top5_err": 1 - top5, "images": n}


def topk_correct(scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[int]:
    """Images whose label is among the top-k scores, for each k (k capped at the class count)."""
    kmax = min(max(ks), scores.shape[1])
    hit = scores.topk(kmax, dim=1).indices == labels[:, None]
    return [int(hit[:, : min(k, kmax)].any(dim=1).sum()) for k in ks]
