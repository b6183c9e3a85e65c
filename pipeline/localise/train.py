"""Training the localisation ConvNet (paper Appendix A.1, "Training").

"Training of localisation ConvNets is similar to that of the classification ConvNets (Sect. 3.1).
The main difference is that we replace the logistic regression objective with a Euclidean loss,
which penalises the deviation of the predicted bounding box parameters from the ground-truth."
Here:

- the net is a classification checkpoint re-headed (:func:`pipeline.localise.net.localisation_net`):
  SCR or PCR, the last layer fresh; the classification net's config, width and crop are kept;
- the loss is Caffe's Euclidean loss, ``1/(2N) sum ||b - b*||^2`` over the targets of the batch
  (for PCR only the outputs of the classes present in the crop's image have targets);
- mini-batch SGD with momentum 0.9 and weight decay 5e-4 (paper 3.1), initial learning rate
  1e-3 (A.1), divided by 10 at the epochs in ``lr_steps``;
- a fixed training scale S ("we did not use training scale jittering"): by default the
  classification net's S; random crops and flips move the boxes (:mod:`pipeline.localise.augment`),
  drawn per image from ``pipeline.transforms.sample_rng(seed, epoch, key)`` as in classification
  training; boxes mostly outside the crop are no targets (``min_visible``);
- fine-tuning of all layers, or of the first two FC layers only (the conv layers frozen).

The epoch loop, checkpoints, resume and metrics are the training engine's
(:mod:`pipeline.train.engine`, shared with classification training); this module supplies the
batches, the SGD step on the box loss and the epoch's validation. Each epoch ends with
``checkpoints/last.pt`` (weights, optimiser, history and the stop reason once finished): a killed
run, run again with the same config, continues from the last finished epoch and gives the result
of an uninterrupted run (every epoch's shuffling, crops and dropout are seeded by (seed, epoch)); a
finished run returns its result without training (more ``epochs`` continue it); another config in
the same ``out`` is refused. SIGTERM / SIGINT stop the run after the current step (the engine's rule);
``last.pt`` stays the last finished epoch's, where the rerun continues.

With a validation split, the central-crop GT-class error (Table 8's
protocol) is measured after each epoch and the best epoch is kept as ``checkpoints/best.pt``
(else ``best.pt`` = the last).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from pipeline.errors import UserError
from pipeline.io import atomic_write_json, sha256_file
from pipeline.localise.augment import box_crop, targets
from pipeline.localise.evaluate import (
    class_names,
    class_order,
    crop_protocol_errors,
    iter_ground_truth,
    runner_for,
    skip_category,
)
from pipeline.localise.net import Head, LocaliserInfo, head_outputs, localisation_net
from pipeline.localise.protocols import LocNet, Runner
from pipeline.models import load_model
from pipeline.preprocess import normalization_of, normalize, train_scale_of
from pipeline.results import LocaliseTrainResult
from pipeline.runtime import DistEnv, RuntimeStageConfig
from pipeline.train.checkpoints import RunPaths
from pipeline.train.engine import Engine, EpochEnd, Plan, Position
from pipeline.train.recipe import freeze_conv, train_mode
from pipeline.transforms import sample_rng

__all__ = ["LocaliseTrainConfig", "run_localise_train", "euclidean_loss"]

#: Fields that may change between a killed run and its continuation (more epochs extend a finished run).
_RESUME_FREE = {"out", "progress", "epochs", "cache_mb", "runtime.device", "runtime.threads"}


class LocaliseTrainConfig(RuntimeStageConfig):
    """Configuration of ``run_localise_train`` (paper A.1 training; Table 8's settings)."""

    data: str = Field(..., description="training data with boxes: a shard folder or a source dataset (VOC/ILSVRC XML)")
    split: str = Field("train", description="training split")
    val_split: str | None = Field(None, description="validation split for the per-epoch GT-class crop error "
                                                    "(None: no validation; best = last)")
    format: str = Field("auto", description="source layout when data is not a shard folder (auto detects)")
    classifier: str = Field(..., description="classification checkpoint to start from (same config; its last "
                                             "layer is replaced)")
    head: Head = Field("pcr", description="scr: one box for all classes (4 outputs); pcr: one box per class (4 x C)")
    fine_tune: Literal["all", "fc"] = Field("all", description="all layers, or only the 1st and 2nd FC layers "
                                                               "(the last layer is always trained from scratch)")
    scale: int | None = Field(None, ge=32, description="fixed training scale S (default: the classifier's S)")
    epochs: int = Field(10, ge=1, description="passes over the training split")
    batch_size: int = Field(256, ge=1, description="mini-batch size (paper: 256)")
    lr: float = Field(1e-3, gt=0, description="initial learning rate (paper A.1: 1e-3)")
    lr_steps: list[int] = Field(
        default_factory=list, description="epochs after which the learning rate is divided by 10"
    )
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (paper: 0.9)")
    weight_decay: float = Field(5e-4, ge=0, description="L2 weight decay (paper: 5e-4)")
    dropout: float | None = Field(None, ge=0, lt=1, description="dropout after FC1 and FC2 while fine-tuning "
                                                                "(default: the classification net's, paper 0.5)")
    init_std: float = Field(1e-2, gt=0, description="std of the fresh box layer's initial weights (biases 0)")
    flip: bool = Field(True, description="random horizontal flips (boxes flipped along)")
    min_visible: float = Field(0.5, ge=0, le=1, description="a box is a regression target only if this fraction of it "
                                                           "lies inside the crop (OverFeat: 50%)")
    shuffle_buffer: int = Field(2048, ge=1, description="images held for shuffling the stream (whole split if larger)")
    limit: int | None = Field(None, ge=1, description="use only the first N training images")
    cache_mb: int = Field(512, ge=0, description="keep the decoded training images in memory after the first epoch "
                                                 "when they fit in this many MB (0: never): the same images in the "
                                                 "same order, read once")
    val_limit: int | None = Field(None, ge=1, description="validate on only the first N images")
    seed: int = Field(0, description="seed of the box layer, shuffling, crops, flips and dropout")
    out: str = Field(..., description="output folder: checkpoints/{last,best}.pt, metrics.jsonl, config.yaml")
    progress: bool = Field(True, description="show progress on a terminal")


def euclidean_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Caffe's Euclidean loss over the boxes that have a target: ``sum(mask * ||pred - target||^2) / 2N``.

    Args:
        pred, target: N x slots x 4 boxes; mask: N x slots (1 where a target exists).
    """
    sq = ((pred.float() - target) ** 2).sum(-1)
    return (sq * mask).sum() / (2 * pred.shape[0])


def _usable(view: Any, cfg: LocaliseTrainConfig, skips: list, counts: dict, memory: dict):
    """The stable stream of usable (sample, ground truth) pairs: read from the data, or from ``memory``
    (the pairs, skips and counts of the first full pass, kept when the split is small enough)."""
    if "items" in memory:
        skips.extend(memory["skips"])
        counts.update(memory["counts"])
        yield from memory["items"]
        return
    items: list | None = [] if cfg.cache_mb > 0 else None
    budget = cfg.cache_mb * 2**20
    for item in iter_ground_truth(view, cfg.limit, skips, counts):
        if items is not None:
            budget -= 3 * item[0].image.size[0] * item[0].image.size[1]
            if budget < 0:
                items = None
            else:
                items.append(item)
        yield item
    if items is not None:
        memory.update(items=items, skips=list(skips), counts=dict(counts))


def _stream(view: Any, cfg: LocaliseTrainConfig, rng: np.random.Generator, skips: list, counts: dict,
            memory: dict | None = None):
    """Usable (sample, ground truth) pairs in a shuffled order (a shuffle buffer over the stable stream)."""
    buf: list = []
    for item in _usable(view, cfg, skips, counts, {} if memory is None else memory):
        buf.append(item)
        if len(buf) >= cfg.shuffle_buffer:
            yield buf.pop(int(rng.integers(len(buf))))
    while buf:
        yield buf.pop(int(rng.integers(len(buf))))


def _batches(view: Any, cfg: LocaliseTrainConfig, s: int, crop: int, slots: int, epoch: int,
             skips: list, counts: dict, memory: dict | None = None):
    """Batches of (uint8 crops, targets, target mask); each image's crop and flip drawn from its own generator."""
    xs, ts, ms = [], [], []
    for sample, gt in _stream(view, cfg, np.random.default_rng([cfg.seed, epoch]), skips, counts, memory):
        bc = box_crop(sample.image, gt, s, crop, sample_rng(cfg.seed, epoch, sample.key), flip=cfg.flip)
        t, m = targets(bc, crop, slots, cfg.min_visible)
        xs.append(bc.image)
        ts.append(t)
        ms.append(m)
        if len(xs) == cfg.batch_size:
            yield torch.stack(xs), torch.from_numpy(np.stack(ts)), torch.from_numpy(np.stack(ms))
            xs, ts, ms = [], [], []
    if xs:
        yield torch.stack(xs), torch.from_numpy(np.stack(ts)), torch.from_numpy(np.stack(ms))


def _frozen_features(model: Any, xb: torch.Tensor, x: torch.Tensor, memo: dict[bytes, torch.Tensor],
                     cfg: LocaliseTrainConfig, runner: Runner) -> torch.Tensor:
    """The frozen conv features of a batch (FC-only fine-tuning), each crop's computed once, alone (so they do not
    depend on the batch it came in: a resumed run computes the same), and reused while they fit in ``cache_mb``.

    With S = crop every epoch's crop of an image is the whole rescaled image, flipped or not: two distinct crops.
    """
    out = []
    for i in range(x.shape[0]):
        key = xb[i].numpy().tobytes()
        f = memo.get(key)
        if f is None:
            with torch.no_grad():
                f = model.features(x[i:i + 1])
            if (len(memo) + 1) * f.numel() * f.element_size() <= cfg.cache_mb * 2**20:
                memo[key] = f
        out.append(f)
    return torch.cat(out)


def _skip_summary(skips: list[dict[str, str]]) -> dict[str, Any]:
    by_reason: dict[str, int] = {}
    for sk in skips:
        cat = skip_category(sk["reason"])
        by_reason[cat] = by_reason.get(cat, 0) + 1
    return {"by_reason": by_reason, "listed": skips[:1000]}


def _validate(model, info: LocaliserInfo, norm, s: int, cfg: LocaliseTrainConfig, runner: Runner) -> float | None:
    if cfg.val_split is None:
        return None
    from pipeline.data import open_data

    view = open_data(cfg.data, cfg.val_split, cfg.format)
    net = LocNet(model, info, norm, [s])
    model.eval()
    errs: list[float] = []
    batch: list = []
    for item in iter_ground_truth(view, cfg.val_limit, [], {}):
        batch.append(item)
        if len(batch) == 64:
            errs += crop_protocol_errors([net], batch, runner, 0.5)[0][0]
            batch = []
    if batch:
        errs += crop_protocol_errors([net], batch, runner, 0.5)[0][0]
    return float(np.mean(errs)) if errs else None


def _classifier(cfg: LocaliseTrainConfig, view: Any) -> tuple[torch.nn.Module, dict[str, Any], int]:
    """The classification net the localiser starts from, its checkpoint and the training scale S."""
    classifier, ck = load_model(cfg.classifier)
    cmeta = ck.get("meta") or {}
    if cmeta.get("localise"):
        raise UserError(f"{cfg.classifier} is a localisation net; start from a classification checkpoint")
    # the class order does not matter here (the box layer is fresh), the classes do
    class_order(f"classifier {cfg.classifier}", cmeta.get("classes"), classifier.cfg.num_classes,
                list(view.classes), class_names(view))
    ts = train_scale_of(ck)
    s = cfg.scale or (ts.s_min if ts else None)
    if s is None:
        raise UserError(f"{cfg.classifier} records no training scale; set scale")
    if s < classifier.cfg.crop:
        raise UserError(f"training scale S={s} is below the crop size {classifier.cfg.crop}")
    return classifier, ck, s


class _LocRun:
    """One localisation run: data, net, optimiser; the training engine's task."""

    def __init__(self, cfg: LocaliseTrainConfig) -> None:
        from pipeline.data import open_data

        self.cfg = cfg
        self.view = view = open_data(cfg.data, cfg.split, cfg.format)
        self.classes = classes = list(view.classes)
        classifier, ck, self.s = _classifier(cfg, view)
        self.crop = classifier.cfg.crop
        self.norm = normalization_of(ck)
        self.runner = runner_for(cfg.runtime)
        model = localisation_net(classifier, cfg.head, cfg.init_std, seed=cfg.seed, dropout=cfg.dropout)
        self.slots = head_outputs(cfg.head, len(classes)) // 4
        self.info = LocaliserInfo(cfg.head, classes, cfg.fine_tune, self.s, {})
        self.base_meta = {
            "normalization": self.norm.model_dump(), "train_scale": {"s_min": self.s, "s_max": self.s},
            "classes": classes, "dataset_fingerprint": view.fingerprint, "config": cfg.model_dump(mode="json"),
            "localise": {"head": cfg.head, "fine_tune": cfg.fine_tune, "classifier": cfg.classifier,
                         "classifier_sha256": sha256_file(cfg.classifier)}}
        freeze_conv(model, cfg.fine_tune)
        self.model = self.runner.prepare(model)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        self.history: list[dict[str, Any]] = []
        self.memory: dict[str, Any] = {}  # the decoded training split, kept after the first epoch when small
        self.frozen: dict[bytes, torch.Tensor] | None = (
            {} if cfg.fine_tune == "fc" and self.s == self.crop and cfg.cache_mb else None)
        self.skip_summary: dict[str, Any] = {"by_reason": {}, "listed": []}
        self.best: dict[str, Any] | None = None
        self.val: float | None = None
        env = DistEnv(0, 1, 0, self.runner.device, None, owns_group=False)
        n = min(len(view), cfg.limit) if cfg.limit else len(view)
        self.engine = Engine(RunPaths(cfg.out), env, Plan("localise train", cfg.epochs, epoch_images=n,
                                                         progress=cfg.progress, verbose=cfg.progress,
                                                         resume_mid_epoch=False))  # resumes at epoch ends
        self._resume()

    def _resume(self) -> None:
        """Continue a killed or finished run from ``last.pt``."""
        cfg = self.cfg
        prev = self.engine.resume_checkpoint(None, cfg.model_dump(mode="json"), _RESUME_FREE,
                                             {"optimizer", "epoch", "history"}, self.view.fingerprint, "data")
        if prev is None:
            return
        self.model.load_state_dict(prev["state_dict"])
        self.opt.load_state_dict(prev["optimizer"])
        self.history, self.best = list(prev["history"]), prev.get("best")
        self.skip_summary = prev.get("skips") or self.skip_summary
        epoch, limit = int(prev["epoch"]), int(prev["meta"]["config"]["epochs"])
        stop = prev.get("stop", f"max_epochs {limit}" if epoch >= limit else "")  # a checkpoint of before `stop`
        self.engine.resume_at(Position(epoch=epoch, finished=bool(stop), stop=stop))

    @property
    def lr(self) -> float:
        return self.opt.param_groups[0]["lr"]

    def start_epoch(self, epoch: int) -> None:
        cfg = self.cfg
        for g in self.opt.param_groups:
            g["lr"] = cfg.lr * 0.1 ** sum(epoch >= e for e in cfg.lr_steps)
        self.skips: list[dict[str, str]] = []
        self.t0, self.seen, self.loss_sum = time.monotonic(), 0, 0.0
        torch.manual_seed(cfg.seed * 100_003 + epoch)
        train_mode(self.model, cfg.fine_tune)  # frozen convs: dropout-free, BatchNorm statistics fixed

    def batches(self, epoch: int, skip: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        return _batches(self.view, self.cfg, self.s, self.crop, self.slots, epoch, self.skips, {}, self.memory)

    def step(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor], step: int) -> tuple[torch.Tensor, int]:
        """One SGD step on the Euclidean box loss."""
        xb, t, m = batch
        model, runner = self.model, self.runner
        x = runner.input(normalize(xb, self.norm))
        with runner.autocast():
            if self.frozen is not None:  # FC layers only, S = crop: each crop's conv features computed once
                outp = model.classifier(torch.flatten(_frozen_features(model, xb, x, self.frozen, self.cfg, runner), 1))
            else:
                outp = model(x)
        pred = outp.float().view(x.shape[0], self.slots, 4)
        loss = euclidean_loss(pred, t.to(pred.device), m.to(pred.device))
        if not torch.isfinite(loss):
            raise UserError(f"loss became {loss.item()} in epoch {self.engine.pos.epoch + 1}; lower lr")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.loss_sum += float(loss.detach()) * x.shape[0]
        self.seen += x.shape[0]
        return loss.detach(), x.shape[0]

    def end_epoch(self, pos: Position) -> EpochEnd:
        """The epoch's skips, validation error, history row; the best epoch by validation error."""
        cfg, epoch = self.cfg, pos.epoch
        if self.seen == 0:
            raise UserError(f"no usable training image in {cfg.data} (split {self.view.split}): "
                            f"{self.skips[0]['reason'] if self.skips else 'empty split'}")
        self.skip_summary = _skip_summary(self.skips)
        self.val = val = _validate(self.model, self.info, self.norm, self.s, cfg, self.runner)
        row = {"epoch": epoch + 1, "lr": self.lr, "train_loss": self.loss_sum / self.seen, "images": self.seen,
               "val_crop_error": val, "seconds": round(time.monotonic() - self.t0, 2)}
        self.history.append(row)
        self.engine.log(f"epoch {epoch + 1}: loss {row['train_loss']:.4f}"
                        + (f", val GT-class crop error {val:.3f}" if val is not None else ""))
        improved = self.best is None or (val is not None and val < self.best["val_crop_error"]) or val is None
        if improved:
            self.best = {"epoch": epoch + 1, "val_crop_error": val}
        return EpochEnd(row, improved=improved)

    def meta(self) -> dict[str, Any]:
        m = self.base_meta
        return dict(m, localise=dict(m["localise"], epoch=self.engine.pos.epoch, val_crop_error=self.val))

    def state(self, pos: Position) -> dict[str, Any]:
        return {"epoch": pos.epoch, "history": self.history, "best": self.best, "skips": self.skip_summary,
                "stop": pos.stop}


def run_localise_train(cfg: LocaliseTrainConfig) -> LocaliseTrainResult:
    """Fine-tune a localisation net from a classification checkpoint (paper A.1).

    Args:
        cfg: data, classifier checkpoint, head (SCR/PCR), fine-tuned layers, scale, SGD settings.
    Returns:
        Summary: checkpoint paths, per-epoch metrics, best epoch and its validation error, skips,
        and why training stopped (``stop``: the finished marker, as in classification training).
    Raises:
        UserError: a classifier of another class count than the data, a localisation checkpoint
            given as classifier, data without boxes, a scale below the crop, an output folder
            holding a run with another config.
    """
    run = _LocRun(cfg)
    pos = run.engine.run(run, cfg)
    paths = run.engine.paths
    result = {"format": "vgg-localise-train/1", "out": str(paths.out), "last": str(paths.last),
              "best": str(paths.best), "metrics": str(paths.metrics), "result_json": str(paths.out / "train.json"),
              "head": cfg.head, "fine_tune": cfg.fine_tune, "train_scale": run.s, "crop": run.crop,
              "classes": run.classes, "history": run.history, "best_epoch": run.best, "skips": run.skip_summary,
              "stop": pos.stop, "config": cfg.model_dump(mode="json")}
    atomic_write_json(paths.out / "train.json", result)
    return LocaliseTrainResult(**result)
