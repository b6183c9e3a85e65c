"""Work pools and workers: the stages on the machines they need (paper 3.3's multi-GPU training, run by a team).

Pools ``cpu`` and ``gpu`` (``prefect.yaml``), the zombie automation that marks a flow run Crashed when its
heartbeats stop, and ``prefect worker start`` with what the project needs (docs/scaleout.md, "Work pools and
workers": the limits, heartbeats and the shared result storage).
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from pathlib import Path

from pipeline.errors import UserError

__all__ = ["POOLS", "HEARTBEAT_S", "ZOMBIE_AUTOMATION", "create_pools", "worker_command", "worker_env"]

#: pool name -> (what runs there, the flow-run limit of one worker)
POOLS: dict[str, tuple[str, int | None]] = {
    "cpu": ("shard, stats, transfer and the pipelines vgg-paper / paper-reproduction", None),
    "gpu": ("train, evaluate, extract, localise: one net stage at a time per machine", 1),
}
#: seconds between a flow run's heartbeats (Prefect requires more than 30)
HEARTBEAT_S = 31
ZOMBIE_AUTOMATION = "vgg: crash flow runs whose machine stopped (no heartbeat)"


def create_pools(names: dict[str, str] | None = None, zombie_after_s: float = 3 * HEARTBEAT_S) -> list[str]:
    """Create the process work pools (``{"cpu": name, "gpu": name}``) and the zombie automation.

    Returns:
        One line per pool or automation: created, or already there.
    """
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    names = {**{k: k for k in POOLS}, **(names or {})}
    lines = []
    with get_client(sync_client=True) as client:
        for role, name in names.items():
            try:
                client.read_work_pool(name)
                lines.append(f"work pool {name!r} exists (kept as it is)")
            except ObjectNotFound:
                client.create_work_pool(WorkPoolCreate(
                    name=name, type="process", description=f"vgg {role} pool: {POOLS[role][0]}",
                    base_job_template=ProcessWorker.get_default_base_job_template()))
                lines.append(f"work pool {name!r} created (process): {POOLS[role][0]}")
        if client.read_automations_by_name(ZOMBIE_AUTOMATION):
            lines.append(f"automation {ZOMBIE_AUTOMATION!r} exists")
        else:
            client.create_automation(_zombie_automation(zombie_after_s))
            lines.append(f"automation {ZOMBIE_AUTOMATION!r} created (after {zombie_after_s:.0f} s without a "
                         "heartbeat a flow run is marked Crashed)")
    return lines


def _zombie_automation(after_s: float):
    """Prefect's documented recipe: no heartbeat nor final state within ``after_s`` -> Crashed."""
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    return AutomationCore(
        name=ZOMBIE_AUTOMATION,
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
                    "prefect.flow-run.Cancelled", "prefect.flow-run.Crashed"},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"}, posture=Posture.Proactive, threshold=1,
            within=timedelta(seconds=after_s)),
        actions=[ChangeFlowRunState(state=StateType.CRASHED,
                                    message=f"no heartbeat for {after_s:.0f} s: its machine stopped or was preempted; "
                                            "rerun the pipeline to resume")],
    )


def worker_env(project: Path, results: Path | None = None) -> dict[str, str]:
    """The environment a worker and its flow runs need (values already set win, except the project folder)."""
    from pipeline.flows.deploy import PROJECT_DIR_ENV

    project = project.resolve()
    if not (project / "prefect.yaml").is_file():
        raise UserError(f"{project}: not the project's folder (no prefect.yaml); start the worker in the checkout")
    env = {PROJECT_DIR_ENV: str(project), "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_S),
           "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str((results or project / ".prefect" / "results").resolve())}
    return {k: (v if k == PROJECT_DIR_ENV else os.environ.get(k, v)) for k, v in env.items()}


def worker_command(pool: str, limit: int | None = None, name: str | None = None) -> list[str]:
    """``prefect worker start`` for ``pool``: type process, the pool's flow-run limit unless ``limit`` is given."""
    role = pool if pool in POOLS else None
    limit = limit if limit is not None else (POOLS[role][1] if role else None)
    cmd = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process"]
    cmd += ["--limit", str(limit)] if limit else []
    return cmd + (["--name", name] if name else [])
