"""``vgg evaluate``: the paper's test protocols on validation data (thin wrapper over run_evaluate)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from pipeline.errors import UserError


def parse_scales(text: str | None) -> list[int] | str | None:
    """``"256,384,512"`` / ``"256 384"`` -> ints; ``single`` / ``multi`` kept as words."""
    if text is None:
        return None
    t = text.strip().lower()
    if t in ("single", "multi"):
        return t
    parts = [p for p in re.split(r"[,\s]+", t) if p]
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise UserError(f"--scales: expected integers like 256,384,512 or single/multi, got {text!r}") from None


def _int_list(text: str | None, what: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(p) for p in re.split(r"[,\s]+", text.strip()) if p]
    except ValueError:
        raise UserError(f"{what}: expected integers like 0,1, got {text!r}") from None


def evaluate(
    checkpoints: Annotated[Optional[list[Path]], typer.Argument(help="checkpoint(s); several are fused (Table 6)")] = None,
    data: Annotated[Optional[str], typer.Option(help="validation shards folder or source dataset")] = None,
    split: Annotated[Optional[str], typer.Option(help="split to evaluate (default val)")] = None,
    method: Annotated[Optional[str], typer.Option(help="dense | multicrop | both")] = None,
    scales: Annotated[Optional[str], typer.Option(help="test scales Q, e.g. 256,384,512; or single / multi "
                                                       "(from the checkpoint's training scale; default multi)")] = None,
    from_posteriors: Annotated[Optional[list[Path]], typer.Option(
        "--from-posteriors", help="recompute from saved posteriors.npz (repeat to fuse runs); no nets are run")] = None,
    nets: Annotated[Optional[str], typer.Option(help="indices of the nets to fuse, e.g. 0,1 (default all)")] = None,
    names: Annotated[Optional[str], typer.Option(help="comma-separated table labels of the checkpoints")] = None,
    out: Annotated[Optional[Path], typer.Option(help="output folder (posteriors.npz, eval.json, table.md/csv)")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto | cpu | cuda")] = None,
    limit: Annotated[Optional[int], typer.Option(help="evaluate only the first N images")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="images of one size per forward pass")] = None,
    threads: Annotated[Optional[int], typer.Option(help="torch CPU threads (1 is fastest on a busy machine)")] = None,
    config: Annotated[Optional[str], typer.Option("--config", "-c", help="YAML config file or preset name")] = None,
    sets: Annotated[Optional[list[str]], typer.Option("--set", help="override a config field: key=value")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the results as JSON")] = False,
) -> None:
    """Evaluate checkpoints with dense / multi-crop evaluation at several scales (paper 3.2, 4.1-4.4).

    Writes posteriors.npz (per image, net, method and scale), eval.json, table.md and table.csv
    (paper Tables 3-6 format) and config.yaml under --out (default runs/evaluate).
    """
    from pipeline.config import load_config
    from pipeline.evaluate.stage import EvaluateConfig, run_evaluate

    overrides: dict[str, Any] = {
        "checkpoints": [str(p) for p in checkpoints] if checkpoints else None,
        "data": data, "split": split, "method": method, "scales": parse_scales(scales),
        "from_posteriors": [str(p) for p in from_posteriors] if from_posteriors else None,
        "nets": _int_list(nets, "--nets"),
        "names": [n.strip() for n in names.split(",")] if names else None,
        "out": str(out) if out else None, "device": device, "limit": limit, "batch_size": batch_size,
        "threads": threads,
    }
    cfg = load_config(EvaluateConfig, config, sets, **overrides)
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
