"""``vgg reproduce``: the paper's experiments at small scale, with a report (thin wrapper over run_reproduce)."""

from __future__ import annotations

import typer

from pipeline.cli.options import stage_command
from pipeline.reproduce.runner import ReproduceConfig, ReproduceResult


@stage_command(ReproduceConfig, skip=["runtime.bf16", "runtime.channels_last", "runtime.threads"])
def reproduce(cfg: ReproduceConfig) -> ReproduceResult:
    """Run the paper's experiments on the shipped data and write report.md, results.json and figures/.

    Trains Table 3's nets (A, A-LRN, B, B-5x5, C, D, E at fixed S; C, D, E with scale jittering;
    deeper nets from A), tests them on 10,000 held-out test images at one and several scales
    (Tables 3-4), multi-crop and fusion (Tables 5-6), localisation (Tables 8-9) and transfer
    (Table 11), and decides each finding by the rule the report states first. Re-running with the
    same --workdir skips finished steps and continues a killed one. --quick runs the same graph at a
    tiny budget (minutes); --only A-fixed,transfer runs some steps (and the runs they need).
    """
    from pipeline.reproduce import run_reproduce

    return run_reproduce(cfg)


def register(app: typer.Typer) -> None:
    app.command("reproduce")(reproduce)
