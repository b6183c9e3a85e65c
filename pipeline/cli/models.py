"""``vgg models`` (Table 2: weight layers, parameters, GFLOPs; 2.3: receptive fields) and ``vgg import-weights``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from pipeline.cli.options import JsonOption, stage_command
from pipeline.config import config_from
from pipeline.models import CONFIGS, STACK_NOTE, ModelConfig, describe, import_torchvision_weights, save_checkpoint


@stage_command(ModelConfig, skip={"config", "dropout"}, aliases={"fc_width": "--fc", "batch_norm": "--bn/--no-bn"},
               presets=False)
def models(model: ModelConfig, as_json: JsonOption = False) -> None:
    """List the ConvNet configurations of Table 1 (and Section 4.1's B-5x5) with weight layers, parameters,
    GFLOPs and the receptive field of the last conv layer.

    At the defaults the parameter counts reproduce Table 2 (and torchvision) exactly.
    """
    rows = [describe(config_from(ModelConfig, {**model.model_dump(), "config": name}, "model options"))
            for name in CONFIGS]
    width, crop, fc, num_classes = model.width, model.crop, model.fc_width, model.num_classes
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    t = Table(title="VGG configurations (Table 1)",
              caption=f"crop {crop}, width x{width:g}, FC {fc}, {num_classes} classes")
    for col in ("config", "weight layers", "parameters", "GFLOPs", "receptive field"):
        t.add_column(col, justify="right" if col != "config" else "left")
    for r in rows:
        t.add_row(r["name"], str(r["weight_layers"]), f"{r['params']:,}", f"{r['gflops']:.2f}",
                  str(r["receptive_field"]))
    Console().print(t)
    typer.echo("receptive field: pixels seen by one unit of the last conv layer. " + STACK_NOTE)


def import_weights(
    src: Annotated[Path, typer.Argument(help="torchvision VGG state dict (.pth), e.g. vgg16-397923af.pth")],
    out: Annotated[Path, typer.Argument(help="our checkpoint to write (.pt)")],
    config: Annotated[str | None, typer.Option(
        help="expected config (A, B, D or E); checked against the weights")] = None,
) -> None:
    """Convert torchvision VGG weights (vgg11/13/16/19 and *_bn) into a checkpoint with its config."""
    model = import_torchvision_weights(src, config=config)
    from pipeline.preprocess import TORCHVISION_NORMALIZATION

    save_checkpoint(out, model, meta={"source": str(src), "origin": "torchvision",
                                      "normalization": TORCHVISION_NORMALIZATION.model_dump(),
                                      "train_scale": {"s_min": 256, "s_max": 256}})
    typer.echo(f"wrote {out}: config {model.cfg.config}{' (bn)' if model.cfg.batch_norm else ''}, "
               f"{model.cfg.num_classes} classes, crop {model.cfg.crop}")


def register(app: typer.Typer) -> None:
    app.command("models")(models)
    app.command("import-weights")(import_weights)
