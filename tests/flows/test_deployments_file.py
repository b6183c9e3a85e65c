"""prefect.yaml against the flows it deploys (one source of truth: the flows of ``all_flows``), the pools each
stage lands on, the stage -> deployment map of the router, the worker command and the pull step.
The same file runs for real in test_pools_workers.py (slow): server, pools, ``prefect deploy --all``, workers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
NET_STAGES = {"train", "evaluate", "extract", "localise"}


@pytest.fixture(scope="module")
def spec() -> dict:
    return yaml.safe_load((REPO / "prefect.yaml").read_text())


def test_every_flow_is_deployed_once_from_the_top_level_flows_folder(spec):
    from prefect.flows import load_flow_from_entrypoint

    from pipeline.flows.deploy import all_flows

    deps = {d["name"]: d for d in spec["deployments"]}
    assert set(deps) == set(all_flows()) and len(deps) == len(spec["deployments"])
    for name, d in deps.items():
        path, _, fn = d["entrypoint"].partition(":")
        assert path.startswith("flows/") and (REPO / path).is_file(), d["entrypoint"]
        cwd = os.getcwd()
        try:
            os.chdir(REPO)
            flow = load_flow_from_entrypoint(d["entrypoint"])
        finally:
            os.chdir(cwd)
        assert flow.name == name and flow is all_flows()[name], name  # the same object the CLI and serve use


def test_net_stages_go_to_the_gpu_pool_and_the_rest_to_the_cpu_pool(spec):
    for d in spec["deployments"]:
        pool = d["work_pool"]["name"]
        assert pool == ("gpu" if d["name"] in NET_STAGES else "cpu"), d["name"]
        env = d["work_pool"]["job_variables"]["env"]
        assert ("CUDA_VISIBLE_DEVICES" in env) == (pool == "cpu")  # CPU stages never take a GPU
    assert spec["pull"] == [{"pipeline.flows.deploy.project_directory": {}}]


def test_every_stage_function_routes_to_a_deployed_stage(spec):
    from pipeline.flows import routing

    deployed = {d["name"] for d in spec["deployments"]}
    targets = {dep for dep, _ in routing._stage_functions().values()}
    assert targets == {"shard", "stats", "train", "evaluate", "extract", "transfer", "localise"} <= deployed


def test_a_gpu_worker_takes_one_flow_run_at_a_time():
    from pipeline.flows.pools import worker_command

    gpu, cpu = worker_command("gpu"), worker_command("cpu")
    assert gpu[gpu.index("--limit") + 1] == "1" and "--limit" not in cpu
    assert gpu[1:6] == ["-m", "prefect", "worker", "start", "--pool"] and "process" in gpu
    assert worker_command("gpu", limit=2)[-1] == "2"


def test_a_failed_child_leaves_its_parent_the_child_line():
    from prefect.states import Crashed, Failed

    from pipeline.flows.routing import child_error

    failed = Failed(message="Flow run encountered an exception. UserError: shards/x: no manifest.json\n")
    assert child_error("train-A", failed) == "stage train-A failed: UserError: shards/x: no manifest.json"
    crashed = Crashed(message="no heartbeat for 93 s")
    assert child_error("extract", crashed) == "stage extract crashed: no heartbeat for 93 s"


def test_the_pull_step_moves_to_the_checkout(tmp_path, monkeypatch):
    from pipeline.errors import UserError
    from pipeline.flows.deploy import PROJECT_DIR_ENV, project_directory

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(PROJECT_DIR_ENV, str(REPO))
    assert project_directory() == {"directory": str(REPO)} and Path.cwd() == REPO
    monkeypatch.setenv(PROJECT_DIR_ENV, str(tmp_path))
    with pytest.raises(UserError, match="no prefect.yaml"):
        project_directory()
