"""``vgg prepare-data``: lay the shipped datasets out as users' data is laid out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.errors import UserError

DATASETS = ("fashion-mnist", "digits-caltech", "voc-mosaics", "voc-action", "ilsvrc-loc")


def prepare_data(
    name: Annotated[str, typer.Argument(help=" | ".join(DATASETS))],
    out: Annotated[Path, typer.Argument(help="folder to create")],
    train_per_class: Annotated[int, typer.Option(help="fashion-mnist: training images per class")] = 1000,
    val_per_class: Annotated[int, typer.Option(help="fashion-mnist: validation images per class")] = 200,
    size: Annotated[int, typer.Option(help="digits-caltech: image side in pixels")] = 64,
    images: Annotated[int | None, typer.Option(
        help="voc-mosaics: number of mosaics (2000); voc-action: images (600)")] = None,
    canvas: Annotated[int | None, typer.Option(help="voc-mosaics, voc-action (default 112), ilsvrc-loc (64): "
                                                       "image side in pixels")] = None,
    seed: Annotated[int, typer.Option(help="digits-caltech, voc-mosaics, voc-action, ilsvrc-loc: seed of the "
                                           "random draws")] = 0,
    per_class: Annotated[int, typer.Option(help="ilsvrc-loc: training images per class (val: 50 per class)")] = 150,
) -> None:
    """Derive a dataset from the files shipped in data/ (deterministic, offline).

    fashion-mnist: ImageFolder tree (train/, val/). digits-caltech: Caltech-256 tree
    (OUT/256_ObjectCategories) of scikit-learn's digits. voc-mosaics: VOC 2007 tree
    (OUT/VOCdevkit/VOC2007) of mosaics of held-out Fashion-MNIST images. voc-action: VOC 2012 action
    tree (OUT/VOCdevkit/VOC2012, ImageSets/Action) whose "persons" are held-out Fashion-MNIST images.
    ilsvrc-loc: ILSVRC CLS-LOC tree (OUT/ILSVRC/Data/CLS-LOC, box XML) of one held-out item per --canvas
    (64) image on clutter.
    """
    if name == "fashion-mnist":
        from pipeline.shipped.fashion_mnist import prepare_fashion_mnist

        path = prepare_fashion_mnist(out, train_per_class, val_per_class)
    elif name == "digits-caltech":
        from pipeline.shipped.digits_caltech import prepare_digits_caltech

        path = prepare_digits_caltech(out, size=size, seed=seed)
    elif name == "voc-mosaics":
        from pipeline.shipped.voc_mosaics import prepare_voc_mosaics

        path = prepare_voc_mosaics(out, images=images or 2000, canvas=canvas or 112, seed=seed)
    elif name == "voc-action":
        from pipeline.shipped.voc_action import prepare_voc_action

        path = prepare_voc_action(out, images=images or 600, canvas=canvas or 112, seed=seed)
    elif name == "ilsvrc-loc":
        from pipeline.shipped.ilsvrc_loc import prepare_ilsvrc_loc

        path = prepare_ilsvrc_loc(out, train_per_class=per_class, canvas=canvas or 64, seed=seed)
    else:
        raise UserError(f"unknown dataset {name!r} ({', '.join(DATASETS)})")
    typer.echo(str(path))


def register(app: typer.Typer) -> None:
    app.command("prepare-data")(prepare_data)
