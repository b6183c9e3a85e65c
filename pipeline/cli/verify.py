"""``vgg verify``: check a shard folder against its manifest (a thin wrapper over ``run_verify``)."""

from __future__ import annotations

from typing import Annotated

import typer

from pipeline.config import load_config


def verify(
    shards: Annotated[str, typer.Argument(help="shard folder (with manifest.json)")],
    hash: Annotated[
        bool, typer.Option("--hash", help="also check every shard's sha256 and decode every image (slow)")
    ] = False,
    split: Annotated[
        list[str] | None, typer.Option("--split", help="split to check (repeatable; default: all)")
    ] = None,
    workers: Annotated[int, typer.Option(help="worker processes (0: all cores)")] = 0,
) -> None:
    """Check every shard's size and sample count against manifest.json (--hash: sha256 and images too).

    Prints a summary table; any damaged or missing shard is an error (exit status 2) naming it.
    """
    from pipeline.shards.config import VerifyConfig
    from pipeline.shards.verify import run_verify

    cfg = load_config(VerifyConfig, None, None, shards=shards, hash=hash, splits=split, workers=workers)
    res = run_verify(cfg)
    total = sum(sp.samples for sp in res.splits.values())
    typer.echo(f"{shards}: ok, {total} samples in {sum(sp.shards for sp in res.splits.values())} shards "
               f"({'sizes, counts, sha256, images' if res.hashed else 'sizes and counts'} match the manifest)")


def register(app: typer.Typer) -> None:
    app.command("verify")(verify)
