"""``vgg server``, ``vgg serve`` and ``vgg demo``: running the pipeline through Prefect.

The flows live in the top-level ``flows`` package; these commands only set offline Prefect
settings (shared/docs/prefect.md) and start things.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer


def server(
    home: Annotated[Optional[Path], typer.Option(help="PREFECT_HOME (default: ./.prefect)")] = None,
    background: Annotated[bool, typer.Option(help="start in the background and return")] = False,
) -> None:
    """Start the Prefect server (UI at http://127.0.0.1:4200) with offline-safe settings."""
    from flows.settings import configure_prefect

    env = configure_prefect(home, use_server=False)
    typer.echo(f"PREFECT_HOME={env['PREFECT_HOME']}; UI at http://{env['PREFECT_SERVER_API_HOST']}:{env['PREFECT_SERVER_API_PORT']}")
    cmd = [sys.executable, "-m", "prefect", "server", "start"] + (["--background"] if background else [])
    raise typer.Exit(subprocess.call(cmd, env=os.environ.copy()))


def serve(
    schedules: Annotated[Optional[Path], typer.Option(help="YAML of cron/interval schedules and parameters per deployment")] = None,
    dask_address: Annotated[Optional[str], typer.Option(help="run fan-out tasks on this Dask scheduler (tcp://host:8786)")] = None,
    home: Annotated[Optional[Path], typer.Option(help="PREFECT_HOME (default: ./.prefect)")] = None,
    limit: Annotated[Optional[int], typer.Option(help="most flow runs at once")] = None,
) -> None:
    """Register every flow as a deployment with the running server and execute triggered runs.

    Start the server first (`vgg server`), then trigger runs from the UI (Deployments page) or
    with `prefect deployment run 'vgg-paper/vgg-paper'`.
    """
    from flows.settings import configure_prefect, server_healthy

    configure_prefect(home, use_server=True)
    if not server_healthy():
        from pipeline.errors import UserError

        raise UserError(f"no Prefect server answers at {os.environ['PREFECT_API_URL']}; start one with `vgg server`")
    from flows.deploy import serve_all

    serve_all(str(schedules) if schedules else None, dask_address, limit)


def register(app: typer.Typer) -> None:
    app.command("server")(server)
    app.command("serve")(serve)
