"""``vgg verify``: check a shard folder against its manifest (a thin wrapper over ``run_verify``)."""

from __future__ import annotations

import typer

from pipeline.cli.options import stage_command
from pipeline.results import VerifyResult
from pipeline.shards.config import VerifyConfig


@stage_command(VerifyConfig, arguments=["shards"], aliases={"splits": "--split"})
def verify(cfg: VerifyConfig) -> VerifyResult:
    """Check every shard's size and sample count against manifest.json (--hash: sha256 and images too).

    Prints a summary table; any damaged or missing shard is an error (exit status 2) naming it.
    """
    from pipeline.shards.run import run_verify

    return run_verify(cfg)


def register(app: typer.Typer) -> None:
    app.command("verify")(verify)
