"""``vgg server``, ``vgg serve``, ``vgg pools``, ``vgg worker`` and ``vgg demo``: running the pipeline through Prefect.

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

from pipeline.cli.options import JsonOption, SetOption

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
    _need_server(home)
    from pipeline.flows.deploy import serve_all

    serve_all(str(schedules) if schedules else None, dask_address, limit)


def pools(
    cpu: Annotated[str, typer.Option(help="name of the pool of the CPU stages (prefect.yaml: cpu)")] = "cpu",
    gpu: Annotated[str, typer.Option(help="name of the pool of the net stages (prefect.yaml: gpu)")] = "gpu",
    home: HomeOption = None,
) -> None:
    """Create the work pools `cpu` and `gpu` (process type) on the running server, and the automation that
    marks a flow run Crashed when its machine stops sending heartbeats. Existing pools are kept.

    Then, from the project folder: `prefect deploy --all` (prefect.yaml), and a worker per machine
    (`vgg worker --pool cpu`, `vgg worker --pool gpu`).
    """
    from pipeline.flows.pools import create_pools

    _need_server(home)
    for line in create_pools({"cpu": cpu, "gpu": gpu}):
        typer.echo(line)


def worker(
    pool: Annotated[str, typer.Option(help="work pool to take flow runs from: cpu or gpu (or your own name)")],
    limit: Annotated[int | None, typer.Option(
        help="most flow runs at once on this machine (default: 1 on gpu, unlimited on cpu)")] = None,
    name: Annotated[str | None, typer.Option(help="worker name shown in the UI (default: generated)")] = None,
    results: Annotated[Path | None, typer.Option(
        help="result storage every machine shares (PREFECT_RESULTS_LOCAL_STORAGE_PATH; default ./.prefect/results): "
             "a child stage hands its result (paths, numbers) to the pipeline waiting on it there")] = None,
    home: HomeOption = None,
) -> None:
    """Start a Prefect process worker on this machine (`prefect worker start --pool POOL --type process`).

    Run it in the project's checkout: flow runs execute there (relative paths resolve there), with flow-run
    heartbeats on, so a machine that stops mid-stage gets its run marked Crashed. On `gpu` the worker takes
    one flow run at a time: a GPU machine runs one net stage at a time. Stop it with Ctrl-C or SIGTERM.
    """
    from pipeline.flows.pools import worker_command, worker_env

    _need_server(home)
    env = {**os.environ, **worker_env(Path.cwd(), results)}
    cmd = worker_command(pool, limit, name)
    typer.echo(f"starting: {' '.join(cmd[1:])}")
    raise typer.Exit(subprocess.call(cmd, env=env))


def _need_server(home: Path | None) -> None:
    from pipeline.flows.settings import configure_prefect, server_healthy

    configure_prefect(home, use_server=True)
    if not server_healthy():
        from pipeline.errors import UserError

        raise UserError(f"no Prefect server answers at {os.environ['PREFECT_API_URL']}; start one with `vgg server`")


def demo(
    workdir: Annotated[Path, typer.Option(help="run folder (outputs are reused by a re-run)")] = Path("runs/demo"),
    sets: SetOption = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
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
    typer.echo(res.model_dump_json(indent=2) if as_json else res.summary())


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
    app.command("server")(server)
    app.command("serve")(serve)
    app.command("pools")(pools)
    app.command("worker")(worker)
