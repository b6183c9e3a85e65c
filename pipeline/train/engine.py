"""One training engine for classification (paper 3.1, 3.3) and localisation (A.1): the epoch loop and stop rule,
checkpoints, metrics, resume, DDP and preemption; a :class:`TrainingTask` supplies the rest (docs/training.md)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from pipeline import reuse, signals
from pipeline.config import save_config
from pipeline.errors import UserError
from pipeline.models import load_checkpoint, save_checkpoint
from pipeline.runtime import DistEnv, Progress
from pipeline.train.checkpoints import RunPaths, clean_stale_tmp, run_identity, truncate_metrics
from pipeline.train.distributed import StopVote, all_reduce_sum

__all__ = ["Plan", "Position", "EpochEnd", "TrainingTask", "Engine", "wrap_model"]


@dataclass
class Plan:
    """How a run goes: its limits, sizes and reporting."""

    stage: str  #: the stage's name, in messages and progress ("train", "localise train")
    max_epochs: int
    max_steps: int | None = None
    steps_per_epoch: int | None = None  #: None: an epoch ends when its batches run out
    epoch_images: int | None = None  #: for progress (None: unknown)
    step_images: int | None = None  #: images of one step (global), where fixed
    log_every: int | None = None  #: steps between training rows of metrics.jsonl (None: epoch rows only)
    checkpoint_every: int = 0  #: also write last.pt every N steps (0: epoch ends only)
    progress: bool = True
    verbose: bool = True  #: log resume / finished notes (rank 0)
    resume_mid_epoch: bool = True  #: last.pt may hold a position inside an epoch (else: epoch ends only)
    resume_keys: Set[str] = frozenset()  #: what a ``last.pt`` of this stage holds
    resume_free: Set[str] = frozenset()  #: the dotted config keys that may differ from the resumed run's


@dataclass
class Position:
    """Where a run stands; ``stop`` is why it finished (empty while it goes on)."""

    epoch: int = 0
    step_in_epoch: int = 0
    step: int = 0
    wall_s: float = 0.0
    finished: bool = False
    stop: str = ""


@dataclass
class EpochEnd:
    """What a trainer reports at the end of an epoch."""

    row: dict[str, Any]  #: the epoch's metrics.jsonl row
    improved: bool = False  #: write best.pt
    stop: str = ""  #: the trainer's own reason to stop (before the engine's limits)


class TrainingTask(Protocol):
    """The trainer-specific part of a run, which the engine drives."""

    model: torch.nn.Module  #: the unwrapped net (what checkpoints hold)
    opt: torch.optim.Optimizer

    @property
    def lr(self) -> float: ...

    def start_epoch(self, epoch: int) -> None:
        """Before an epoch's first step (train mode, lr, seeds)."""

    def batches(self, epoch: int, skip: int) -> Iterator[Any]:
        """The batches of ``epoch``, one per SGD step, after the first ``skip`` steps."""

    def step(self, batch: Any, step: int) -> tuple[torch.Tensor, int]:
        """One SGD step (the run's ``step``-th): (its detached mean loss on this rank, images over all ranks)."""

    def end_epoch(self, pos: Position) -> EpochEnd:
        """Validation, schedule and the metrics row of the epoch ``pos.epoch`` (0-based, not yet counted)."""

    def meta(self) -> dict[str, Any]:
        """The checkpoints' meta."""

    def state(self, pos: Position) -> dict[str, Any]:
        """What ``last.pt`` holds besides weights, meta and optimiser (position, schedule, history ...)."""


def wrap_model(model: torch.nn.Module, env: DistEnv, compile: bool = False) -> tuple[torch.nn.Module, DDP | None]:
    """The net to run: ``model`` in DDP on many ranks (only the parameters with a gradient are registered),
    compiled if asked; returns (net, the DDP wrapper or None)."""
    ddp = DDP(model, device_ids=[env.device.index] if env.device.type == "cuda" else None) if env.world > 1 else None
    net: torch.nn.Module = ddp if ddp is not None else model
    return (torch.compile(net) if compile else net), ddp


@dataclass
class Engine:
    """The epoch loop, checkpoints, metrics and progress of one run in ``paths`` (rank 0 writes)."""

    paths: RunPaths
    env: DistEnv
    plan: Plan
    pos: Position = field(default_factory=Position)
    train_time: float = 0.0
    train_images: int = 0

    def __post_init__(self) -> None:
        self._t0 = time.perf_counter()
        self._vote: StopVote | None = None  # made by run(), on every rank

    # -- resume ---------------------------------------------------------------------------------
    def resume_checkpoint(self, resume: bool | None, config: dict[str, Any], fingerprint: str,
                          data: str) -> dict[str, Any] | None:
        """``last.pt`` to continue from, checked against ``config`` and the data's ``fingerprint`` (``data``: its name),
        or None for a fresh run; stale temporary files go. ``resume``: True continues a run if there is one, None a
        run found, False refuses one."""
        last, stage = self.paths.last, self.plan.stage
        ck = None
        if self.paths.last.exists() and resume is not False:
            ck = load_checkpoint(last)  # its tensors' sha256 verified: one-line error for a damaged file
            meta = ck.get("meta") or {}
            if not self.plan.resume_keys <= set(ck) or "config" not in meta:
                raise UserError(f"{last}: not a `{stage}` checkpoint (no optimiser state or position); "
                                "move it away or choose another out folder")
            old, new = run_identity(meta["config"], meta.get("dataset_fingerprint"), config, fingerprint,
                                    self.plan.resume_free)
            reuse.check_reusable(_RunFolder(last, old, data), new)
        elif resume:
            self.log(f"--resume: no checkpoint in {self.paths.out} yet, starting from the beginning")
        elif self.paths.last.exists():
            raise UserError(f"{self.paths.out} already holds a training run: pass --resume to continue it, "
                            "or choose another out")
        if self.env.main:
            clean_stale_tmp(self.paths)  # left by a run killed while writing a checkpoint
        return ck

    def resume_at(self, pos: Position) -> None:
        """Continue from ``pos`` (read from ``last.pt``); a run stopped by a limit this config raises goes on."""
        self.pos = pos
        if not pos.finished and pos.epoch >= self.plan.max_epochs:  # a lowered limit, already reached
            pos.finished, pos.stop = True, f"max_epochs {self.plan.max_epochs}"
        elif pos.finished and self._limit_raised():  # `--set schedule.max_epochs=...`: train longer
            self.log(f"{self.paths.out}: the run stopped at {pos.stop}; continuing to the new limit")
            pos.finished, pos.stop = False, ""
        elif not pos.finished:
            self.log(f"{self.paths.out}: resuming after epoch {pos.epoch}" +
                     (f", step {pos.step}" if pos.step_in_epoch else ""))

    def _limit_raised(self) -> bool:
        pos, plan = self.pos, self.plan
        if pos.stop.startswith("max_epochs"):
            return pos.epoch < plan.max_epochs and (plan.max_steps is None or pos.step < plan.max_steps)
        if pos.stop.startswith("max_steps"):
            return plan.max_steps is None or pos.step < plan.max_steps
        return False

    # -- output ---------------------------------------------------------------------------------
    def log(self, msg: str) -> None:
        if self.env.main and self.plan.verbose:
            print(msg, file=sys.stderr, flush=True)

    def wall(self) -> float:
        """Seconds of training so far, over all sessions of the run."""
        return self.pos.wall_s + (time.perf_counter() - self._t0)

    def metric(self, row: dict[str, Any]) -> None:
        if self.env.main:
            with open(self.paths.metrics, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")

    def save_last(self, task: TrainingTask) -> None:
        if self.env.main:
            save_checkpoint(self.paths.last, task.model, meta=task.meta(), optimizer=task.opt.state_dict(),
                            **task.state(self.pos))

    # -- the loop -------------------------------------------------------------------------------
    def run(self, task: TrainingTask, config: Any) -> Position:
        """Train until the stop rule; ``config`` is saved as ``config.yaml``. Returns the final position."""
        self._t0 = time.perf_counter()
        paths, pos = self.paths, self.pos
        if self.env.main:
            paths.ckpt_dir.mkdir(parents=True, exist_ok=True)
            save_config(config, paths.config)
            if pos.step or pos.epoch:  # rows written after last.pt go
                truncate_metrics(paths.metrics, pos.step, pos.epoch + (pos.step_in_epoch > 0))
            else:
                paths.metrics.unlink(missing_ok=True)
        if pos.finished:
            self.log(f"{paths.out}: run already finished ({pos.stop})")
        self._vote = StopVote(self.env)
        with signals.stop_on_signals(defer=True):  # SIGTERM / SIGINT: stop after the step (_stop_if_asked)
            while not pos.finished:
                show = self.plan.progress and self.env.main
                total, start = self.plan.epoch_images, pos.step_in_epoch * (self.plan.step_images or 0)
                with Progress(total, f"{self.plan.stage} epoch {pos.epoch + 1}/{self.plan.max_epochs}",
                              enabled=show, start=start) as bar:
                    hit = self._epoch(task, bar)
                self._end_epoch(task, hit)
                if not pos.finished:
                    self._stop_if_asked(task, saved=True)
        return pos

    def _stop_if_asked(self, task: TrainingTask, saved: bool) -> None:
        """After a step or an epoch end: if any rank received SIGTERM / SIGINT, save ``last.pt`` here (unless
        ``saved``) and raise :class:`~pipeline.signals.Stopped` on every rank."""
        assert self._vote is not None
        signum = self._vote.agree(signals.requested())
        if signum is None:
            return
        pos = self.pos
        if not saved and self.plan.resume_mid_epoch:
            self.save_last(task)
        raise signals.Stopped(signum, f"at epoch {pos.epoch + (pos.step_in_epoch > 0)} step {pos.step}")

    def _epoch(self, task: TrainingTask, bar: Progress) -> bool:
        """Train the rest of the current epoch; True if max_steps was reached."""
        plan, pos = self.plan, self.pos
        task.start_epoch(pos.epoch)
        if plan.max_steps and pos.step >= plan.max_steps:  # resumed at the limit: only the epoch's end is left
            return True
        if plan.steps_per_epoch is not None and pos.step_in_epoch >= plan.steps_per_epoch:  # stopped after its
            return False  # last step, before its end (validation)
        batches = task.batches(pos.epoch, pos.step_in_epoch)
        try:
            return self._steps(task, bar, batches)
        finally:  # the epoch's loader workers stop now, not when the generator is collected
            getattr(batches, "close", lambda: None)()

    def _steps(self, task: TrainingTask, bar: Progress, batches: Iterator[Any]) -> bool:
        """The SGD steps of ``batches``, each followed by the metrics row, checkpoint and stop checks."""
        plan, pos, dev = self.plan, self.pos, self.env.device
        t_log, n_log, img_log, loss_log = time.perf_counter(), 0, 0, torch.zeros((), device=dev)
        for batch in batches:
            loss, images = task.step(batch, pos.step)
            loss_log += loss
            pos.step += 1
            pos.step_in_epoch += 1
            n_log, img_log = n_log + 1, img_log + images
            # rows at the same steps of the epoch however often the run was resumed inside it
            if plan.log_every and (pos.step_in_epoch % plan.log_every == 0
                                   or pos.step_in_epoch == plan.steps_per_epoch):
                mean = all_reduce_sum([float(loss_log)], self.env)[0] / (n_log * self.env.world)
                ips = img_log / (time.perf_counter() - t_log)
                self.metric({"kind": "train", "epoch": pos.epoch + 1, "step": pos.step, "loss": mean,
                             "lr": task.lr, "images_per_s": ips, "wall_s": self.wall()})
                self.train_time += time.perf_counter() - t_log
                self.train_images += img_log
                bar.note(f"loss {mean:.3f} lr {task.lr:.0e} {ips:.0f} img/s")
                t_log, n_log, img_log, loss_log = time.perf_counter(), 0, 0, torch.zeros((), device=dev)
            bar.advance(images)
            saved = bool(plan.checkpoint_every and pos.step % plan.checkpoint_every == 0
                         and pos.step_in_epoch != plan.steps_per_epoch)  # the epoch's end saves its own
            if saved:
                self.save_last(task)
            self._stop_if_asked(task, saved)
            if plan.max_steps and pos.step >= plan.max_steps:
                return True
        return False

    def _end_epoch(self, task: TrainingTask, max_steps_hit: bool) -> None:
        plan, pos = self.plan, self.pos
        end = task.end_epoch(pos)
        self.metric(end.row)
        pos.epoch += 1
        pos.step_in_epoch = 0
        if end.stop:
            pos.stop = end.stop
        elif max_steps_hit:
            pos.stop = f"max_steps {plan.max_steps}"
        elif pos.epoch >= plan.max_epochs:
            pos.stop = f"max_epochs {plan.max_epochs}"
        pos.finished = bool(pos.stop)
        if end.improved and self.env.main:
            save_checkpoint(self.paths.best, task.model, meta=task.meta())
        self.save_last(task)

    def images_per_s(self) -> float | None:
        """Training throughput of this session (steps only: no validation, no checkpoints)."""
        return round(self.train_images / self.train_time, 1) if self.train_time else None


class _RunFolder(reuse.Output):
    """A training run's folder, as its ``last.pt`` records it: finished is all it can be (it resumes)."""

    what = "a run written with another config or data"
    hint = "choose another out folder"

    def __init__(self, last: Path, recorded: dict[str, Any], data: str) -> None:
        super().__init__(last)
        self.recorded, self.labels = recorded, {"data": f"{data} fingerprint"}

    def read(self) -> reuse.Recorded:
        return reuse.Recorded(self.recorded, True)
