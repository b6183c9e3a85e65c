"""``vgg bench``: throughput of every stage against its baseline, in one run."""

from __future__ import annotations

import json
import platform
from typing import Annotated

import typer


def bench(
    stages: Annotated[str, typer.Option(
        help="comma-separated: shard,loader,train,ddp,evaluate,extract,transfer,transfer-paper")] =
        "shard,loader,train,ddp,evaluate,extract,transfer,transfer-paper",
    device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
    quick: Annotated[bool, typer.Option("--quick/--full", help="a few minutes on two cores, or longer runs")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON rows instead of a table")] = False,
) -> None:
    """Measure each stage against its plain baseline (same data, same device, one process).

    Prints: stage | ours | baseline | unit | ratio | goal | meets.
    """
    from pipeline.bench import markdown, run_bench

    log = (lambda s: None) if as_json else (lambda s: typer.echo(s, err=True))
    rows = run_bench([s.strip() for s in stages.split(",") if s.strip()], quick=quick, device=device, log=log)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        typer.echo(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, device {device}")
        typer.echo(markdown(rows))


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
