"""``vgg server``, ``vgg serve`` and ``vgg demo``: running the pipeline through Prefect.

The flows live in :mod:`pipeline.flows`; these commands only set offline Prefect settings
(docs/design.md, "Prefect integration") and start things.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.options import SetOption

HomeOption = Annotated[Path | None, typer.Option(help="PREFECT_HOME (default: ./.prefect)")]


def server(
    home: HomeOption = None,
    background: Annotated[bool, typer.Option(help="start in the background and return")] = False,
) -> None:
    """Start the Prefect server (UI at http://127.0.0.1:4200) with offline-safe settings."""
    from pipeline.flows.settings import configure_prefect

    env = configure_prefect(home, use_server=False)
    typer.echo(f"PREFECT_HOME={env['PREFECT_HOME']}; UI at http://{env['PREFECT_SERVER_API_HOST']}:{env['PREFECT_SERVER_API_PORT']}")
    cmd = [sys.executable, "-m", "prefect", "server", "start"] + (["--background"] if background else [])
    raise typer.Exit(subprocess.call(cmd, env=os.environ.copy()))


def serve(
    schedules: Annotated[Path | None, typer.Option(
        help="YAML of cron/interval schedules and parameters per deployment")] = None,
    dask_address: Annotated[str | None, typer.Option(
        help="run fan-out tasks on this Dask scheduler (tcp://host:8786)")] = None,
    home: HomeOption = None,
    limit: Annotated[int | None, typer.Option(help="most flow runs at once")] = None,
) -> None:
    """Register every flow as a deployment with the running server and execute triggered runs.

    Start the server first (`vgg server`), then trigger runs from the UI (Deployments page) or
    with `prefect deployment run 'vgg-paper/vgg-paper'`.
    """
    from pipeline.flows.settings import configure_prefect, server_healthy

    configure_prefect(home, use_server=True)
    if not server_healthy():
        from pipeline.errors import UserError

        raise UserError(f"no Prefect server answers at {os.environ['PREFECT_API_URL']}; start one with `vgg server`")
    from pipeline.flows.deploy import serve_all

    serve_all(str(schedules) if schedules else None, dask_address, limit)


def demo(
    workdir: Annotated[Path, typer.Option(help="run folder (outputs are reused by a re-run)")] = Path("runs/demo"),
    sets: SetOption = None,
    home: HomeOption = None,
) -> None:
    """Run the whole paper pipeline on the shipped data as the Prefect flow `vgg-paper`.

    Shard Fashion-MNIST, stats, train net A then net D from A, evaluate (dense, multi-crop,
    combination, fusion), extract features for a Caltech-style and a VOC-style set, linear-SVM
    transfer, localisation; prints the paper-style tables and writes them to WORKDIR/tables.md.
    With a server running (`vgg server`) the run appears in its UI; otherwise the run is recorded
    in PREFECT_HOME's database, which `vgg server` shows later. --set takes the fields of
    pipeline.flows.paper.PaperConfig (e.g. --set localise_epochs=2).
    """
    from pipeline.flows.settings import configure_prefect

    configure_prefect(home)  # before Prefect is imported
    from pipeline.config import load_config
    from pipeline.flows.paper import PaperConfig, paper_flow

    cfg = load_config(PaperConfig, None, sets, workdir=str(workdir))
    res = paper_flow(cfg)
    typer.echo(Path(res.tables).read_text())
    typer.echo(f"demo finished in {res.seconds:.0f} s; tables in {res.tables}")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
    app.command("server")(server)
    app.command("serve")(serve)
