"""``vgg transfer``: linear-SVM evaluation of feature stores (thin wrapper over run_transfer), and
``vgg pixel-features``: the raw-pixel baseline written as a feature store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.options import JsonOption, stage_command
from pipeline.transfer.stage import TransferConfig


@stage_command(TransferConfig, arguments=["stores"], aliases={"test_stores": "--test", "splits_file": "--splits"})
def transfer(cfg: TransferConfig, as_json: JsonOption = False) -> None:
    """Fit linear SVMs on stored descriptors with the VOC or Caltech protocol (paper Appendix B, Table 11).

    Writes transfer.json, table.md (Table 11 format), decisions/ (per-image decision values),
    splits.json (Caltech, generic) and config.yaml under --out.
    """
    from pipeline.transfer.stage import run_transfer

    result = run_transfer(cfg.model_copy(update={"progress": False}) if as_json else cfg)
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    from pipeline.transfer.report import per_class_table, table11

    typer.echo(table11([result]))
    if len(result["per_class"]) <= 30:
        typer.echo(per_class_table(result))
    c = result["chosen_C"]
    typer.echo(f"chosen C: {c if not isinstance(c, dict) else 'per class'}; solver {result.get('solver')}; "
               f"{result['descriptor']['dim']}-D descriptors ({result['descriptor']['aggregate']}); "
               f"{'reused' if result.get('status') == 'exists' else 'written'}: {result['out']}")


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
