"""``vgg train --config PRESET [--set key=value ...] [--resume]``: a thin wrapper over ``run_train``.

The same command runs on many ranks: ``torchrun --nproc_per_node=N -m pipeline train ...``
(or ``python -m pipeline.train ...``).
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from pipeline.config import load_config


def train(
    config: Annotated[str, typer.Option("--config", "-c", help="preset name (pipeline/presets) or YAML file")],
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="override a field: key=value (dotted keys), repeatable")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue the run in `out` from checkpoints/last.pt")] = False,
    out: Annotated[Optional[str], typer.Option("--out", help="output folder (overrides the config's `out`)")] = None,
    shards: Annotated[Optional[str], typer.Option("--shards", help="shard folder (overrides data.shards)")] = None,
) -> None:
    """Train a VGG net on WebDataset shards with the paper's recipe (Sect. 3.1); multi-device under torchrun."""
    from pipeline.train import TrainConfig, run_train

    sets = list(set_ or [])
    if shards:
        sets.append(f"data.shards={shards}")
    cfg = load_config(TrainConfig, config, sets, out=out, resume=resume or None)
    result = run_train(cfg)
    import os

    if os.environ.get("RANK", "0") == "0":
        typer.echo(result.model_dump_json(indent=2))


def register(app: typer.Typer) -> None:
    app.command("train")(train)
