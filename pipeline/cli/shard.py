"""``vgg shard``, ``vgg stats`` and ``vgg inspect``: thin wrappers over the shard stage (paper 3.1)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from pipeline.config import load_config


def shard(
    source: Annotated[str, typer.Argument(help="dataset folder (ImageFolder, ILSVRC, VOC, Caltech) or a CSV/JSONL manifest")],
    out: Annotated[str, typer.Argument(help="output folder for shards, manifest.json, skipped.jsonl")],
    format: Annotated[Optional[str], typer.Option("--format", help="auto, imagefolder, ilsvrc, voc, caltech101, caltech256, manifest")] = None,
    split: Annotated[Optional[list[str]], typer.Option("--split", help="source split to write (repeatable); src:dest renames, e.g. all:train")] = None,
    max_side: Annotated[Optional[int], typer.Option("--max-side", help="smaller side at most this (paper S_max = 512); never upscaled")] = None,
    quality: Annotated[Optional[int], typer.Option(help="JPEG quality of re-encoded images")] = None,
    shard_count: Annotated[Optional[int], typer.Option("--shard-count", help="samples per shard at most")] = None,
    shard_bytes: Annotated[Optional[int], typer.Option("--shard-bytes", help="bytes per shard at most (about)")] = None,
    seed: Annotated[Optional[int], typer.Option(help="seed of the shuffle across shards")] = None,
    workers: Annotated[Optional[int], typer.Option(help="worker processes (0: all cores)")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace shards of another source or config")] = False,
    devkit: Annotated[Optional[str], typer.Option(help="ILSVRC: devkit folder or ILSVRC2012_devkit_t12.tar.gz (val labels)")] = None,
    config: Annotated[Optional[str], typer.Option("--config", "-c", help="YAML config or preset name")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="key=value config override (repeatable)")] = None,
) -> None:
    """Write an image collection as WebDataset shards ({split}-000000.tar) with manifest.json.

    Resumes after a kill, does nothing when the shards are up to date, refuses a folder of another
    source or config unless --overwrite. Unusable files are skipped with reasons in skipped.jsonl.
    """
    from pipeline.shards import ShardConfig, run_shard

    opts = {"devkit": devkit} if devkit else None
    cfg = load_config(ShardConfig, config, set_, source=source, out=out, format=format, splits=split,
                      max_side=max_side, quality=quality, shard_count=shard_count, shard_bytes=shard_bytes,
                      seed=seed, workers=workers, overwrite=overwrite or None, source_options=opts)
    run_shard(cfg)  # logs its summary (stderr)


def stats(
    shards: Annotated[str, typer.Argument(help="shard folder (with manifest.json)")],
    split: Annotated[str, typer.Option(help="split to compute the statistics on")] = "train",
    images: Annotated[Optional[int], typer.Option(help="seeded subsample of this many images (default: all)")] = None,
    seed: Annotated[int, typer.Option(help="seed of the subsample")] = 0,
    workers: Annotated[int, typer.Option(help="worker processes (0: all cores)")] = 0,
) -> None:
    """Mean RGB, RGB covariance and its eigen-decomposition (0-255 scale), stored in manifest.json."""
    from pipeline.shards import StatsConfig, run_stats

    cfg = load_config(StatsConfig, None, None, shards=shards, split=split, images=images, seed=seed, workers=workers)
    s = run_stats(cfg)
    typer.echo(json.dumps({k: s[k] for k in ("mean", "eigval", "eigvec", "images", "pixels")}, indent=1))


def inspect(
    path: Annotated[str, typer.Argument(help="shard folder, features .h5 file or checkpoint .pt")],
    samples: Annotated[int, typer.Option(help="samples to show (shard folders)")] = 3,
    split: Annotated[Optional[str], typer.Option(help="split whose samples to show")] = None,
) -> None:
    """Summarise a shard folder (manifest + a few samples), a feature store or a checkpoint."""
    from pipeline.shards.inspect import describe_path

    typer.echo(describe_path(Path(path), samples=samples, split=split))


def register(app: typer.Typer) -> None:
    app.command("shard")(shard)
    app.command("stats")(stats)
    app.command("inspect")(inspect)
