"""Scale-out on a real Dask cluster: the extract flow's fan-out through Prefect's Dask task runner.

A ``dask scheduler`` process and two ``dask worker`` processes on 127.0.0.1 (each its own
process, as on real machines); the extract flow runs with the task runner ``vgg serve
--dask-address`` attaches (:func:`flows.stages.task_runner`), its parts run in the workers and the
merged store equals the one-process store byte for byte (arrays and attributes).
"""

from __future__ import annotations

import os
import sys

import pytest

from tests.scaleout.conftest import child_env, flows_module, free_port, start, stop, wait_for

pytestmark = pytest.mark.slow  # a Prefect server, a scheduler and two workers on two cores: about a minute


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory):
    """Prefect's test server (temporary database); its URL is handed to the Dask workers."""
    OFFLINE_ENV = flows_module("settings").OFFLINE_ENV

    home = tmp_path_factory.mktemp("prefect-home")
    for k, v in {**OFFLINE_ENV, "PREFECT_HOME": str(home)}.items():
        os.environ.setdefault(k, v)
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield {"PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_HOME": os.environ["PREFECT_HOME"]}


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory, prefect_api):
    """``dask scheduler`` + two ``dask worker`` processes on 127.0.0.1; stopped by their ids."""
    from distributed import Client

    OFFLINE_ENV = flows_module("settings").OFFLINE_ENV

    logs = tmp_path_factory.mktemp("dask-logs")
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = child_env(**OFFLINE_ENV, **prefect_api)
    dask = [sys.executable, "-m", "dask"]
    procs = [start([*dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                   logs / "scheduler.log", env)]
    try:
        for i in range(2):
            procs.append(start([*dask, "worker", address, "--name", f"w{i}", "--nthreads", "1", "--nworkers", "1",
                                "--no-dashboard", "--host", "127.0.0.1", "--memory-limit", "0"],
                               logs / f"worker{i}.log", env, cwd=logs))
        wait_for(lambda: (logs / "scheduler.log").read_text().count("Scheduler at") > 0, 120, "the Dask scheduler")
        with Client(address, timeout=120) as client:
            client.wait_for_workers(2, timeout=180)
            yield {"address": address, "client": client, "logs": logs}
    finally:
        for p in reversed(procs):
            stop(p)


def test_extract_fan_out_on_a_dask_cluster_equals_one_process(tmp_path, ckpt, fmnist, single_store, dask_cluster):
    from pipeline.features import ExtractConfig
    from tests.helpers.features import SCALES, assert_same_store

    build_deployments = flows_module("deploy").build_deployments
    extract_flow, task_runner = flows_module("stages").extract_flow, flows_module("stages").task_runner

    address, client = dask_cluster["address"], dask_cluster["client"]
    runner = task_runner(dask_address=address)
    assert type(runner).__name__ == "DaskTaskRunner"
    served = {d.name for d in build_deployments(dask_address=address)}  # what `vgg serve --dask-address` serves
    assert "extract" in served
    out = tmp_path / "features.h5"
    cfg = ExtractConfig(checkpoints=[str(ckpt)], data=str(fmnist), split="val", out=str(out), scales=SCALES,
                        batch_size=4)
    before = set(client.run(os.getpid).values())
    res = extract_flow.with_options(task_runner=runner)(config=cfg, parts=2)
    assert res["status"] == "merged" and res["parts"] == 2
    assert_same_store(out, single_store)
    # the parts ran in the worker processes: each worker's log shows its task runs
    logs = [(dask_cluster["logs"] / f"worker{i}.log").read_text() for i in range(2)]
    ran = sum(log.count("extract-part") for log in logs)
    assert ran >= 2, logs
    assert os.getpid() not in before and len(before) == 2
