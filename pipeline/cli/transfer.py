"""``vgg transfer``: linear-SVM evaluation of feature stores (thin wrapper over run_transfer), and
``vgg pixel-features``: the raw-pixel baseline written as a feature store."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from pipeline.errors import UserError


def _floats(text: str | None, what: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(p) for p in re.split(r"[,\s]+", text.strip()) if p]
    except ValueError:
        raise UserError(f"{what}: expected numbers like 0.1,1,10, got {text!r}") from None


def transfer(
    stores: Annotated[list[Path], typer.Argument(help="feature store(s) of the same images; several are stacked (late fusion)")],
    protocol: Annotated[Optional[str], typer.Option(
        help="voc07 | voc12 | caltech101 | caltech256 | generic | voc12-action")] = None,
    test: Annotated[Optional[list[Path]], typer.Option("--test", help="store(s) of the test images, one per net (repeat)")] = None,
    out: Annotated[Optional[Path], typer.Option(help="output folder (default: transfer-PROTOCOL beside the first store)")] = None,
    aggregate: Annotated[Optional[str], typer.Option(help="avg | stack over scales (default: avg VOC, stack Caltech)")] = None,
    scales: Annotated[Optional[str], typer.Option(help="stored scales to use, e.g. 256,384,512 (default all)")] = None,
    c_grid: Annotated[Optional[str], typer.Option("--c-grid", help="SVM C values, e.g. 0.1,1,10")] = None,
    solver: Annotated[Optional[str], typer.Option(help="auto | newton | liblinear")] = None,
    voc_sets: Annotated[Optional[Path], typer.Option("--voc-sets", help="VOC ImageSets/Main (or VOCdevkit) folder")] = None,
    splits_file: Annotated[Optional[Path], typer.Option("--splits", help="reuse a saved splits.json")] = None,
    train_per_class: Annotated[Optional[int], typer.Option(help="training images per class (generic; overrides Caltech's)")] = None,
    test_per_class: Annotated[Optional[int], typer.Option(help="test images per class at most")] = None,
    config: Annotated[Optional[str], typer.Option("--config", "-c", help="YAML config file or preset name")] = None,
    sets: Annotated[Optional[list[str]], typer.Option("--set", help="override a config field: key=value")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Fit linear SVMs on stored descriptors with the VOC or Caltech protocol (paper Appendix B, Table 11).

    Writes transfer.json, table.md (Table 11 format), decisions/ (per-image decision values),
    splits.json (Caltech, generic) and config.yaml under --out.
    """
    from pipeline.config import load_config
    from pipeline.transfer.stage import TransferConfig, run_transfer

    overrides: dict[str, Any] = {
        "stores": [str(p) for p in stores], "protocol": protocol, "test_stores": [str(p) for p in test] if test else None,
        "out": str(out) if out else None, "aggregate": aggregate,
        "scales": [int(x) for x in _floats(scales, "--scales")] if scales else None,
        "c_grid": _floats(c_grid, "--c-grid"), "solver": solver, "voc_sets": str(voc_sets) if voc_sets else None,
        "splits_file": str(splits_file) if splits_file else None, "train_per_class": train_per_class,
        "test_per_class": test_per_class,
    }
    cfg = load_config(TransferConfig, config, sets, **overrides, progress=False if as_json else None)
    result = run_transfer(cfg)
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
    split: Annotated[Optional[str], typer.Option(help="split to describe (as vgg extract)")] = None,
    format: Annotated[str, typer.Option(help="source layout (auto detects)")] = "auto",
) -> None:
    """Write raw pixels as a feature store: the baseline the deep features are compared with."""
    from pipeline.transfer.descriptors import write_pixel_store

    typer.echo(str(write_pixel_store(data, out, size=size, split=split, format=format)))


def register(app: typer.Typer) -> None:
    app.command("transfer")(transfer)
    app.command("pixel-features")(pixel_features)
