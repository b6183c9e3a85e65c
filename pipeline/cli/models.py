"""``vgg models`` (Table 2: weight layers, parameters, GFLOPs; 2.3: receptive fields) and ``vgg import-weights``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from pipeline.config import config_from
from pipeline.models import CONFIGS, STACK_NOTE, ModelConfig, describe, import_torchvision_weights, save_checkpoint
from pipeline.models.checkpoint import load_checkpoint


def models(
    width: Annotated[float, typer.Option(help="width multiplier on the conv channels 64..512")] = 1.0,
    crop: Annotated[int, typer.Option(help="crop size (multiple of 32)")] = 224,
    fc: Annotated[int, typer.Option(help="FC1/FC2 width")] = 4096,
    num_classes: Annotated[int, typer.Option("--num-classes", help="classes of the last FC layer")] = 1000,
    batch_norm: Annotated[bool, typer.Option("--bn/--no-bn", help="BatchNorm after each conv")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON list instead of a table")] = False,
) -> None:
    """List the ConvNet configurations of Table 1 (and Section 4.1's B-5x5) with weight layers, parameters,
    GFLOPs and the receptive field of the last conv layer.

    At the defaults the parameter counts reproduce Table 2 (and torchvision) exactly.
    """
    rows = []
    for name in CONFIGS:
        cfg = config_from(ModelConfig, dict(config=name, width=width, crop=crop, fc_width=fc,
                                            num_classes=num_classes, batch_norm=batch_norm), "model options")
        rows.append(describe(cfg))
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    t = Table(title="VGG configurations (Table 1)", caption=f"crop {crop}, width x{width:g}, FC {fc}, {num_classes} classes")
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
    config: Annotated[Optional[str], typer.Option(help="expected config (A, B, D or E); checked against the weights")] = None,
) -> None:
    """Convert torchvision VGG weights (vgg11/13/16/19 and *_bn) into a checkpoint with its config."""
    model = import_torchvision_weights(src, config=config)
    from pipeline.preprocess import TORCHVISION_NORMALIZATION

    save_checkpoint(out, model, meta={"source": str(src), "origin": "torchvision",
                                      "normalization": TORCHVISION_NORMALIZATION.model_dump(),
                                      "train_scale": {"s_min": 256, "s_max": 256}})
    typer.echo(f"wrote {out}: config {model.cfg.config}{' (bn)' if model.cfg.batch_norm else ''}, "
               f"{model.cfg.num_classes} classes, crop {model.cfg.crop}")


def show_checkpoint(path: Path) -> dict:
    """Summary of one of our checkpoints (used by `vgg inspect`)."""
    ck = load_checkpoint(path)
    return {"model": ck["model"], "meta": ck.get("meta", {}), "keys": sorted(k for k in ck if k != "state_dict")}


def register(app: typer.Typer) -> None:
    app.command("models")(models)
    app.command("import-weights")(import_weights)
