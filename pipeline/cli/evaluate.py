"""``vgg evaluate``: the paper's test protocols on validation data (thin wrapper over run_evaluate)."""

from __future__ import annotations

import typer

from pipeline.cli.options import stage_command
from pipeline.evaluate.config import EvaluateConfig
from pipeline.results import EvaluateResult


@stage_command(EvaluateConfig, arguments=["checkpoints"])
def evaluate(cfg: EvaluateConfig) -> EvaluateResult:
    """Evaluate checkpoints with dense / multi-crop evaluation at several scales (paper 3.2, 4.1-4.4).

    Writes posteriors.npz (per image, net, method and scale), eval.json, table.md and table.csv
    (paper Tables 3-6 format) and config.yaml under --out (default runs/evaluate).
    """
    from pipeline.evaluate import run_evaluate

    if cfg.out is None:
        cfg = cfg.model_copy(update={"out": "runs/evaluate"})
    return run_evaluate(cfg)


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
