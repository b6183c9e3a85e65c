"""``vgg table ensemble RUN...``: paper Table 6 (ConvNet fusion) from saved evaluation runs (thin wrapper)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

table_app = typer.Typer(help="Paper tables rebuilt from saved results (no net is run).", no_args_is_help=True)


@table_app.command("ensemble")
def ensemble(
    runs: Annotated[list[Path], typer.Argument(help="`vgg evaluate` output folders (or their posteriors.npz)")],
    nets: Annotated[list[str] | None, typer.Option(
        "--nets", help="nets fused in one row, e.g. 0,1 (indices over the runs' nets in order; repeat for more "
                       "rows; default: all nets)")] = None,
    method: Annotated[list[str] | None, typer.Option(
        "--method", help="dense | multicrop | both (repeatable; default: every method stored)")] = None,
    out: Annotated[Path | None, typer.Option(help="also write the table as Markdown here")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the rows as JSON")] = False,
) -> None:
    """Table 6: fuse the nets of saved runs (average of soft-max posteriors) and print top-1/top-5 error."""
    from pipeline.config import config_from
    from pipeline.evaluate.ensemble import EnsembleConfig, run_ensemble

    data = {"runs": [str(r) for r in runs], "groups": ";".join(nets) if nets else None, "methods": method or None,
            "out": str(out) if out else None}
    cfg = config_from(EnsembleConfig, data, "vgg table ensemble")
    res = run_ensemble(cfg)
    if as_json:
        typer.echo(json.dumps({k: v for k, v in res.items() if k != "markdown"}, indent=2))
        return
    typer.echo(res["markdown"], nl=False)
    for n in res["nets"]:
        typer.echo(f"net {n['index']}: {n['label']} from {n['run']}")


def register(app: typer.Typer) -> None:
    app.add_typer(table_app, name="table")
