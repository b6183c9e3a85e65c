"""Real Prefect for the flow tests: an in-process test server (session), and a real
``prefect server start`` + ``vgg serve`` pair started the way users start them (module)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pipeline.flows.settings import OFFLINE_ENV
from tests.helpers.prefect import api, free_port, stop, wait_for


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    """Prefect's own test harness: a temporary database and server for in-process flow runs."""
    home = tmp_path_factory.mktemp("prefect-home")
    for k, v in {**OFFLINE_ENV, "PREFECT_HOME": str(home)}.items():
        os.environ.setdefault(k, v)
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield home


@pytest.fixture(scope="module")
def live_prefect(tmp_path_factory):
    """A real `prefect server start` and `vgg serve`, started as users start them; stopped by PID."""
    home = tmp_path_factory.mktemp("live-prefect")
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, **OFFLINE_ENV, "PREFECT_HOME": str(home), "PREFECT_SERVER_API_PORT": str(port),
           "PREFECT_API_URL": url, "PREFECT_RUNNER_POLL_FREQUENCY": "2", "TMPDIR": str(home),
           "PREFECT_UI_API_URL": url}
    logs = home / "logs"
    logs.mkdir()
    procs = []
    try:
        server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start"], env=env,
                                  stdout=open(logs / "server.log", "w"), stderr=subprocess.STDOUT,
                                  start_new_session=True)
        procs.append(server)
        wait_for(lambda: api(url, "/health") is True, 120, "the Prefect server's /health")
        serve = subprocess.Popen([sys.executable, "-m", "pipeline", "serve"], env=env, cwd=home,
                                 stdout=open(logs / "serve.log", "w"), stderr=subprocess.STDOUT,
                                 start_new_session=True)
        procs.append(serve)
        yield {"url": url, "ui": f"http://127.0.0.1:{port}", "home": home, "env": env, "logs": logs}
    finally:
        for p in reversed(procs):
            stop(p)
