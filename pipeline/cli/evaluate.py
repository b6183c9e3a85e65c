"""``vgg evaluate``: the paper's test protocols on validation data (thin wrapper over run_evaluate)."""

from __future__ import annotations

import os
from typing import Any

import typer

from pipeline.cli.options import JsonOption, stage_command
from pipeline.evaluate.stage import EvaluateConfig


@stage_command(EvaluateConfig, arguments=["checkpoints"])
def evaluate(cfg: EvaluateConfig, as_json: JsonOption = False) -> None:
    """Evaluate checkpoints with dense / multi-crop evaluation at several scales (paper 3.2, 4.1-4.4).

    Writes posteriors.npz (per image, net, method and scale), eval.json, table.md and table.csv
    (paper Tables 3-6 format) and config.yaml under --out (default runs/evaluate).
    """
    from pipeline.evaluate.stage import run_evaluate

    if cfg.out is None:
        cfg = cfg.model_copy(update={"out": "runs/evaluate"})
    result = run_evaluate(cfg)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, process 0 reports
        return
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    _print(result)


def _print(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    t = Table(title=f"{result['method_name']} evaluation ({result['n_images']} images)")
    for col in ("config", "train (S)", "test (Q)", "method", "top-1 err %", "top-5 err %"):
        t.add_column(col, justify="right" if "err" in col else "left")
    for r in result["rows"]:
        t.add_row(r["config"], r["train_S"], r["test_Q"], r["method"], f"{r['top1_error_pct']:.1f}",
                  f"{r['top5_error_pct']:.1f}")
    con.print(t)

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.2f}%"

    con.print(f"top-1 error {pct(result['top1_error'])}, top-5 error {pct(result['top5_error'])} "
              f"on {result['n_images']} images; {result['n_failed']} failed to decode")
    for note in result.get("notes", []):
        con.print(f"note: {note}")
    if result.outputs is not None:
        con.print(f"wrote {result.outputs.eval}")


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
