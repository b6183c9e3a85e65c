"""Training the localisation ConvNet (paper Appendix A.1): the Euclidean box loss on random crops at a fixed scale S,
as a task of the training engine (:mod:`pipeline.train.engine`); docs/formats.md section 4.9.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pipeline.errors import UserError
from pipeline.localise.augment import box_crop, targets
from pipeline.localise.config import LocaliseTrainConfig
from pipeline.localise.net import LocaliserInfo, head_outputs
from pipeline.localise.protocols import LocNet, Runner, crop_protocol_errors
from pipeline.localise.selection import in_batches, iter_ground_truth, skip_summary
from pipeline.models import VGG
from pipeline.preprocess import Normalization, normalize
from pipeline.train.engine import Engine, EpochEnd, Position
from pipeline.train.recipe import set_lr, train_mode
from pipeline.transforms import sample_rng

__all__ = ["euclidean_loss", "TrainingRun", "BoxRegression"]

#: Fields that may change between a killed run and its continuation (more epochs extend a finished run).
LOCALISE_RESUME_FREE = {"out", "progress", "epochs", "cache_mb", "runtime.device", "runtime.threads"}
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # uint8 crops, targets, target mask


def euclidean_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Caffe's Euclidean loss over the N x slots boxes that have a target: ``sum(mask * ||pred - target||^2) / 2N``."""
    sq = ((pred.float() - target) ** 2).sum(-1)
    return (sq * mask).sum() / (2 * pred.shape[0])


@dataclass
class TrainingRun:
    """The task's context."""

    cfg: LocaliseTrainConfig
    view: Any  #: the training split
    runner: Runner
    engine: Engine
    s: int  #: the fixed training scale S
    norm: Normalization
    meta: dict[str, Any]  #: the checkpoints' meta (the epoch and validation error are added)


class BoxRegression:
    """The training engine's task for a localisation net: batches, the SGD step on the box loss, validation."""

    def __init__(self, run: TrainingRun, model: VGG, opt: torch.optim.Optimizer) -> None:
        self.run, self.cfg, self.model, self.opt = run, run.cfg, model, opt
        self.crop = model.cfg.crop
        self.slots = head_outputs(run.cfg.head, len(run.view.classes)) // 4
        self.history: list[dict[str, Any]] = []
        self.memory: dict[str, Any] = {}  # the decoded training split, kept after the first epoch when small
        self.frozen: dict[bytes, torch.Tensor] | None = (
            {} if self.cfg.fine_tune == "fc" and run.s == self.crop and self.cfg.cache_mb else None)
        self.skip_summary: dict[str, Any] = {"by_reason": {}, "listed": []}
        self.best: dict[str, Any] | None = None
        self.val: float | None = None

    def resume(self) -> None:
        """Continue a killed or finished run from ``last.pt``; another config in the same ``out`` is refused."""
        cfg, engine = self.cfg, self.run.engine
        prev = engine.resume_checkpoint(None, cfg.model_dump(mode="json"), self.run.view.fingerprint, "data")
        if prev is None:
            return
        self.model.load_state_dict(prev["state_dict"])
        self.opt.load_state_dict(prev["optimizer"])
        self.history, self.best = list(prev["history"]), prev.get("best")
        self.skip_summary = prev.get("skips") or self.skip_summary
        stop = prev["stop"]
        engine.resume_at(Position(epoch=int(prev["epoch"]), finished=bool(stop), stop=stop))

    @property
    def lr(self) -> float:
        return self.opt.param_groups[0]["lr"]

    def start_epoch(self, epoch: int) -> None:
        cfg = self.cfg
        set_lr(self.opt, cfg.lr * 0.1 ** sum(epoch >= e for e in cfg.lr_steps))
        self.skips: list[dict[str, str]] = []
        self.t0, self.seen, self.loss_sum = time.monotonic(), 0, 0.0
        torch.manual_seed(cfg.seed * 100_003 + epoch)
        train_mode(self.model, cfg.fine_tune)  # frozen convs: dropout-free, BatchNorm statistics fixed

    def _usable(self, counts: dict[str, int]) -> Iterator[tuple[Any, Any]]:
        """The usable (sample, ground truth) pairs in data order: read, or kept from the first pass (``cache_mb``)."""
        memory, cfg = self.memory, self.cfg
        if "items" in memory:
            self.skips.extend(memory["skips"])
            counts.update(memory["counts"])
            yield from memory["items"]
            return
        items, budget = [], cfg.cache_mb * 2**20
        for item in iter_ground_truth(self.run.view, cfg.limit, self.skips, counts):
            budget -= 3 * item[0].image.size[0] * item[0].image.size[1]
            if budget >= 0:
                items.append(item)
            yield item
        if cfg.cache_mb > 0 and budget >= 0:
            memory.update(items=items, skips=list(self.skips), counts=dict(counts))

    def _shuffled(self, rng: np.random.Generator) -> Iterator[tuple[Any, Any]]:
        """The usable pairs in a shuffled order (a shuffle buffer over the stable stream)."""
        buf: list = []
        for item in self._usable({}):
            buf.append(item)
            if len(buf) >= self.cfg.shuffle_buffer:
                yield buf.pop(int(rng.integers(len(buf))))
        while buf:
            yield buf.pop(int(rng.integers(len(buf))))

    def batches(self, epoch: int, skip: int) -> Iterator[Batch]:
        """The epoch's batches; each image's crop and flip drawn from its own generator."""
        cfg = self.cfg
        for chunk in in_batches(self._shuffled(np.random.default_rng([cfg.seed, epoch])), cfg.batch_size):
            crops = [box_crop(sample.image, gt, self.run.s, self.crop, sample_rng(cfg.seed, epoch, sample.key),
                              flip=cfg.flip) for sample, gt in chunk]
            t, m = zip(*(targets(bc, self.crop, self.slots, cfg.min_visible) for bc in crops), strict=True)
            yield torch.stack([bc.image for bc in crops]), torch.from_numpy(np.stack(t)), torch.from_numpy(np.stack(m))

    def _frozen_features(self, xb: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The frozen conv features of a batch (FC-only at S = crop: each epoch crops the whole image), each crop's
        computed alone (as a resumed run does) and kept while they fit in ``cache_mb``."""
        assert self.frozen is not None
        out = []
        for i in range(x.shape[0]):
            key = xb[i].numpy().tobytes()
            f = self.frozen.get(key)
            if f is None:
                with torch.no_grad():
                    f = self.model.features(x[i:i + 1])
                if (len(self.frozen) + 1) * f.numel() * f.element_size() <= self.cfg.cache_mb * 2**20:
                    self.frozen[key] = f
            out.append(f)
        return torch.cat(out)

    def step(self, batch: Batch, step: int) -> tuple[torch.Tensor, int]:
        """One SGD step on the Euclidean box loss."""
        xb, t, m = batch
        model, runner = self.model, self.run.runner
        x = runner.input(normalize(xb, self.run.norm))
        with runner.autocast():
            if self.frozen is not None:
                outp = model.classifier(torch.flatten(self._frozen_features(xb, x), 1))
            else:
                outp = model(x)
        pred = outp.float().view(x.shape[0], self.slots, 4)
        loss = euclidean_loss(pred, t.to(pred.device), m.to(pred.device))
        if not torch.isfinite(loss):
            raise UserError(f"loss became {loss.item()} in epoch {self.run.engine.pos.epoch + 1}; lower lr")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.loss_sum += float(loss.detach()) * x.shape[0]
        self.seen += x.shape[0]
        return loss.detach(), x.shape[0]

    def _validate(self) -> float | None:
        """The central-crop GT-class error on the validation split (Table 8's protocol), or None without one."""
        cfg, run = self.cfg, self.run
        if cfg.val_split is None:
            return None
        from pipeline.data import open_data

        view = open_data(cfg.data, cfg.val_split, cfg.format)
        info = LocaliserInfo(cfg.head, list(run.view.classes), cfg.fine_tune, run.s, {})
        net = LocNet(self.model, info, run.norm, [run.s])
        self.model.eval()
        errs = [e for batch in in_batches(iter_ground_truth(view, cfg.val_limit, [], {}), 64)
                for e in crop_protocol_errors([net], batch, run.runner, 0.5)[0][0]]
        return float(np.mean(errs)) if errs else None

    def end_epoch(self, pos: Position) -> EpochEnd:
        """The epoch's skips, validation error, history row; the best epoch by validation error."""
        cfg, epoch = self.cfg, pos.epoch
        if self.seen == 0:
            raise UserError(f"no usable training image in {cfg.data} (split {self.run.view.split}): "
                            f"{self.skips[0]['reason'] if self.skips else 'empty split'}")
        self.skip_summary = skip_summary(self.skips)
        self.val = val = self._validate()
        row = {"epoch": epoch + 1, "lr": self.lr, "train_loss": self.loss_sum / self.seen, "images": self.seen,
               "val_crop_error": val, "seconds": round(time.monotonic() - self.t0, 2)}
        self.history.append(row)
        self.run.engine.log(f"epoch {epoch + 1}: loss {row['train_loss']:.4f}"
                            + (f", val GT-class crop error {val:.3f}" if val is not None else ""))
        improved = self.best is None or (val is not None and val < self.best["val_crop_error"]) or val is None
        if improved:
            self.best = {"epoch": epoch + 1, "val_crop_error": val}
        return EpochEnd(row, improved=improved)

    def meta(self) -> dict[str, Any]:
        m = self.run.meta
        return dict(m, localise=dict(m["localise"], epoch=self.run.engine.pos.epoch, val_crop_error=self.val))

    def state(self, pos: Position) -> dict[str, Any]:
        return {"epoch": pos.epoch, "history": self.history, "best": self.best, "skips": self.skip_summary,
                "stop": pos.stop}
