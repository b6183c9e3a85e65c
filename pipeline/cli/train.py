"""``vgg train --config PRESET [--set key=value ...] [--resume]``: a thin wrapper over ``run_train``.

Every field of :class:`pipeline.train.TrainConfig` is an option (``--optim.lr``, ``--data.shards``,
``--model.config``, ...). The same command runs on many ranks: ``torchrun --nproc_per_node=N -m
pipeline train ...`` (or ``python -m pipeline.train ...``).
"""

from __future__ import annotations

import os

import typer

from pipeline.cli.options import stage_command
from pipeline.signals import stop_on_signals
from pipeline.train.config import TrainConfig


@stage_command(TrainConfig, aliases={"data.shards": "--shards"})
def train(cfg: TrainConfig) -> None:
    """Train a VGG net on WebDataset shards with the paper's recipe (Sect. 3.1); multi-device under torchrun.

    Start from a preset (--config fmnist-a, paper-d-s256, ...) and change any field with its option
    or --set. Writes checkpoints/{last,best}.pt, metrics.jsonl and config.yaml under --out.
    """
    from pipeline.train import run_train

    with stop_on_signals():  # before the loop: stop at once; in it the engine stops after the step
        result = run_train(cfg)
    if os.environ.get("RANK", "0") == "0":
        typer.echo(result.model_dump_json(indent=2))


def register(app: typer.Typer) -> None:
    app.command("train")(train)
