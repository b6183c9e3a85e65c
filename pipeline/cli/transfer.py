"""``vgg transfer``: linear-SVM evaluation of feature stores (thin wrapper over run_transfer), and
``vgg pixel-features``: the raw-pixel baseline written as a feature store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.options import stage_command
from pipeline.results import TransferResult
from pipeline.transfer.config import TransferConfig


@stage_command(TransferConfig, arguments=["stores"], aliases={"test_stores": "--test", "splits_file": "--splits"})
def transfer(cfg: TransferConfig) -> TransferResult:
    """Fit linear SVMs on stored descriptors with the VOC or Caltech protocol (paper Appendix B, Table 11).

    Writes transfer.json, table.md (Table 11 format), decisions/ (per-image decision values),
    splits.json (Caltech, generic) and config.yaml under --out.
    """
    from pipeline.transfer.run import run_transfer

    return run_transfer(cfg)


def pixel_features(
    data: Annotated[str, typer.Argument(help="shard folder or source dataset (Caltech, VOC, ImageFolder, ...)")],
    out: Annotated[Path, typer.Option(help="feature store to write")] = Path("pixels.h5"),
    size: Annotated[int, typer.Option(help="images are resized to size x size RGB")] = 32,
    split: Annotated[str | None, typer.Option(help="split to describe (as vgg extract)")] = None,
    format: Annotated[str, typer.Option(help="source layout (auto detects)")] = "auto",
) -> None:
    """Write raw pixels as a feature store: the baseline the deep features are compared with."""
    from pipeline.transfer.descriptors import write_pixel_store

    typer.echo(str(write_pixel_store(data, out, size=size, split=split, format=format)))


def register(app: typer.Typer) -> None:
    app.command("transfer")(transfer)
    app.command("pixel-features")(pixel_features)
