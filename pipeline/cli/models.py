"""``vgg models`` (Table 2: weight layers, parameters, GFLOPs; 2.3: receptive fields) and ``vgg import-weights``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.options import stage_command
from pipeline.models import NETS, ModelConfig, import_torchvision_weights, net_complexity, save_checkpoint
from pipeline.results import ModelsResult


@stage_command(ModelConfig, skip={"config", "dropout"}, aliases={"fc_width": "--fc", "batch_norm": "--bn/--no-bn"},
               presets=False)
def models(model: ModelConfig) -> ModelsResult:
    """List the ConvNet configurations of Table 1 (and Section 4.1's B-5x5) with weight layers, parameters,
    GFLOPs and the receptive field of the last conv layer.

    At the defaults the parameter counts reproduce Table 2 (and torchvision) exactly.
    """
    return ModelsResult(nets=[net_complexity(model.model_copy(update={"config": name})) for name in NETS])


def import_weights(
    src: Annotated[Path, typer.Argument(help="torchvision VGG state dict (.pth), e.g. vgg16-397923af.pth")],
    out: Annotated[Path, typer.Argument(help="our checkpoint to write (.pt)")],
    config: Annotated[str | None, typer.Option(help="expected config (" + ", ".join(
        n for n, s in NETS.items() if s.torchvision) + "); checked against the weights")] = None,
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
