"""Deployments of every flow, served to a Prefect server (``vgg serve``).

Optional schedules come from a small YAML file::

    vgg-paper:                 # deployment (= flow) name
      cron: "0 3 * * 0"        # every Sunday 03:00
      parameters: {config: {workdir: runs/weekly}}
    extract:
      interval: 3600           # seconds

A Dask cluster runs the fan-out tasks (extraction parts) when ``dask_address`` is given.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import UserError

__all__ = ["all_flows", "build_deployments", "load_schedules", "serve_all", "project_directory", "PROJECT_DIR_ENV"]

#: the checkout a worker runs flows in (set by ``vgg worker``)
PROJECT_DIR_ENV = "VGG_PROJECT_DIR"


def all_flows() -> dict[str, Any]:
    """Deployment name -> flow."""
    from pipeline.flows.paper import paper_flow
    from pipeline.flows.reproduce import reproduction_flow
    from pipeline.flows.stages import STAGE_FLOWS

    return {**STAGE_FLOWS, "vgg-paper": paper_flow, "paper-reproduction": reproduction_flow}


def load_schedules(path: str | os.PathLike[str] | None) -> dict[str, dict[str, Any]]:
    """Read the schedules YAML (see module docstring); unknown names are an error."""
    if path is None:
        return {}
    p = Path(path)
    if not p.is_file():
        raise UserError(f"schedules file not found: {p}")
    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data, dict):
        raise UserError(f"{p}: expected a mapping of deployment name -> {{cron|interval, parameters}}")
    unknown = sorted(set(data) - set(all_flows()))
    if unknown:
        raise UserError(f"{p}: unknown deployment(s) {unknown} (known: {', '.join(all_flows())})")
    for name, spec in data.items():
        if not isinstance(spec, dict) or not set(spec) <= {"cron", "interval", "parameters"}:
            raise UserError(f"{p}: {name}: expected keys cron, interval, parameters")
    return data


def build_deployments(schedules: dict[str, dict[str, Any]] | None = None, dask_address: str | None = None) -> list[Any]:
    """One RunnerDeployment per flow, with its schedule and default parameters."""
    from pipeline.flows.stages import task_runner

    deps = []
    for name, fl in all_flows().items():
        spec = (schedules or {}).get(name, {})
        if dask_address:
            fl = fl.with_options(task_runner=task_runner(dask_address=dask_address))
        deps.append(fl.to_deployment(
            name=name, cron=spec.get("cron"), interval=spec.get("interval"),
            parameters=spec.get("parameters"), tags=["vgg"],
            description=(fl.description or "") + " -- parameters are the stage's config (see `vgg <stage> --help`).",
        ))
    return deps


def serve_all(schedules_file: str | None = None, dask_address: str | None = None, limit: int | None = None) -> None:
    """Register every flow as a deployment with the server and run the flows triggered there."""
    from prefect import serve

    serve(*build_deployments(load_schedules(schedules_file), dask_address), limit=limit)


def project_directory() -> dict[str, str]:
    """``prefect.yaml``'s pull step: change to this machine's checkout of the project.

    That is ``$VGG_PROJECT_DIR`` (``vgg worker`` sets it to the folder it was started in, when that
    holds ``prefect.yaml``), else the folder the installed ``pipeline`` package comes from (an editable
    install's checkout). Relative paths in a run's parameters (``runs/...``) resolve there.
    """
    import pipeline

    root = os.environ.get(PROJECT_DIR_ENV) or str(Path(pipeline.__file__).resolve().parent.parent)
    if not (Path(root) / "prefect.yaml").is_file():
        raise UserError(f"{root}: not a checkout of the project (no prefect.yaml); set {PROJECT_DIR_ENV}")
    os.chdir(root)
    return {"directory": os.getcwd()}
