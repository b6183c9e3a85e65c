"""``vgg prepare-data``: lay the shipped datasets out as users' data is laid out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.errors import UserError


def prepare_data(
    name: Annotated[str, typer.Argument(help="fashion-mnist")],
    out: Annotated[Path, typer.Argument(help="folder to create")],
    train_per_class: Annotated[int, typer.Option(help="fashion-mnist: training images per class")] = 1000,
    val_per_class: Annotated[int, typer.Option(help="fashion-mnist: validation images per class")] = 200,
) -> None:
    """Derive a dataset from the files shipped in data/ (deterministic, offline)."""
    if name == "fashion-mnist":
        from pipeline.shipped.fashion_mnist import prepare_fashion_mnist

        path = prepare_fashion_mnist(out, train_per_class, val_per_class)
    else:
        raise UserError(f"unknown dataset {name!r} (fashion-mnist)")
    typer.echo(str(path))


def register(app: typer.Typer) -> None:
    app.command("prepare-data")(prepare_data)
