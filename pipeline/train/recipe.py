"""The paper's training recipe (3.1): SGD with momentum and weight decay, the plateau schedule (lr / 10 when the
validation accuracy stops improving), and the starts: random, from net A, a checkpoint, FC-only (docs/training.md)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from pipeline.errors import UserError
from pipeline.models import VGG, init_from_net_a, init_weights, load_model
from pipeline.train.config import InitConfig, OptimConfig, ScheduleConfig

__all__ = ["PlateauSchedule", "batch_split", "build_optimizer", "freeze_conv", "initialise", "set_lr", "train_mode"]


@dataclass
class PlateauSchedule:
    """Divide the lr when val top-1 stops improving; after ``lr_drops`` divisions, stop at the next plateau."""

    lr: float
    lr_drops: int = 3
    drop_factor: float = 10.0
    patience: int = 1
    min_delta: float = 0.0
    best: float = -1.0
    best_epoch: int = -1
    bad_epochs: int = 0
    drops: int = 0
    stopped: bool = False

    @classmethod
    def from_config(cls, lr: float, cfg: ScheduleConfig) -> PlateauSchedule:
        return cls(lr=lr, **cfg.model_dump(include={"lr_drops", "drop_factor", "patience", "min_delta"}))

    def update(self, top1: float, epoch: int) -> str:
        """Record one epoch's validation top-1; returns "improved", "wait", "drop" or "stop"."""
        if top1 > self.best + self.min_delta:
            self.best, self.best_epoch, self.bad_epochs = top1, epoch, 0
            return "improved"
        self.bad_epochs += 1
        if self.bad_epochs < self.patience:
            return "wait"
        if self.drops < self.lr_drops:
            self.lr /= self.drop_factor
            self.drops += 1
            self.bad_epochs = 0
            return "drop"
        self.stopped = True
        return "stop"

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, v)


def batch_split(global_batch: int, world: int, micro_batch: int | None) -> tuple[int, int, int]:
    """(images per rank per step, micro-batch, accumulation steps): the global batch divides among ranks, and each
    share into equal micro-batches, so every step averages the gradient of exactly ``global_batch`` images (3.3)."""
    if global_batch % world:
        raise UserError(f"the global batch {global_batch} does not divide among {world} ranks")
    share = global_batch // world
    micro = micro_batch or share
    if micro > share or share % micro:
        raise UserError(
            f"optim.micro_batch={micro} must divide each rank's share of the batch ({share} = {global_batch}/{world})"
        )
    return share, micro, share // micro


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig, lr: float) -> torch.optim.SGD:
    """Mini-batch SGD with momentum and weight decay over the trainable parameters (frozen ones are left out)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def freeze_conv(model: VGG, trainable: str) -> list[str]:
    """Freeze the conv part (``model.features``) when ``trainable == "fc"``, before wrapping the model in DDP (it
    registers only parameters that require a gradient); returns the frozen parameter names."""
    if trainable == "all":
        return []
    if trainable != "fc":
        raise UserError(f"unknown init.trainable {trainable!r} (all, fc)")
    frozen = []
    for name, p in model.features.named_parameters():
        p.requires_grad_(False)
        frozen.append(f"features.{name}")
    return frozen


def train_mode(model: VGG, trainable: str) -> None:
    """``model.train()``, except that a frozen conv part stays in eval mode (BatchNorm statistics unchanged)."""
    model.train()
    if trainable == "fc":
        model.features.eval()


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group."""
    for g in opt.param_groups:
        g["lr"] = lr


def _check_classes(path: str, ck: dict[str, Any], classes: list[str]) -> None:
    theirs = (ck.get("meta") or {}).get("classes")
    if theirs is not None and list(theirs) != list(classes):
        raise UserError(f"{path}: trained on other classes ({len(theirs)}: {', '.join(theirs[:3])}, ...) "
                        f"than these shards ({len(classes)}: {', '.join(classes[:3])}, ...)")


def initialise(model: VGG, cfg: InitConfig, classes: list[str]) -> dict[str, Any]:
    """Initialise ``model`` in place as ``cfg`` says; returns what was done (for the run record)."""
    init_weights(model, cfg.method, std=cfg.std, seed=cfg.seed)
    info: dict[str, Any] = {"method": cfg.method, "trainable": cfg.trainable}
    if cfg.net_a:
        net_a, ck = load_model(cfg.net_a)
        _check_classes(cfg.net_a, ck, classes)
        info["net_a"] = {"path": cfg.net_a, "layers": init_from_net_a(model, net_a)}
    elif cfg.checkpoint:
        src, ck = load_model(cfg.checkpoint)
        _check_classes(cfg.checkpoint, ck, classes)
        if src.cfg.model_dump(exclude={"dropout"}) != model.cfg.model_dump(exclude={"dropout"}):
            raise UserError(
                f"{cfg.checkpoint}: fine-tuning needs the same architecture; checkpoint has "
                f"{src.cfg.model_dump(exclude={'dropout'})}, config has {model.cfg.model_dump(exclude={'dropout'})}"
            )
        model.load_state_dict(src.state_dict())
        info["checkpoint"] = cfg.checkpoint
    return info
