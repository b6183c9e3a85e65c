"""``vgg train --config PRESET [--set key=value ...] [--resume]``: a thin wrapper over ``run_train``.

Every field of :class:`pipeline.train.TrainConfig` is an option (``--optim.lr``, ``--data.shards``,
``--model.config``, ...). The same command runs on many ranks: ``torchrun --nproc_per_node=N -m
pipeline train ...`` (or ``python -m pipeline.train ...``).
"""

from __future__ import annotations

import typer

from pipeline.cli.options import stage_command
from pipeline.results import TrainResult
from pipeline.signals import stop_on_signals
from pipeline.train.config import TrainConfig


@stage_command(TrainConfig, aliases={"data.shards": "--shards"})
def train(cfg: TrainConfig) -> TrainResult:
    """Train a VGG net on WebDataset shards with the paper's recipe (Sect. 3.1); multi-device under torchrun.

    Start from a preset (--config fmnist-a, paper-d-s256, ...) and change any field with its option
    or --set. Writes checkpoints/{last,best}.pt, metrics.jsonl, config.yaml and train.json under --out.
    """
    from pipeline.train import run_train

    with stop_on_signals():  # before the loop: stop at once; in it the engine stops after the step
        return run_train(cfg)


def register(app: typer.Typer) -> None:
    app.command("train")(train)
