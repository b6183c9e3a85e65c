"""A team's setup on one machine: a real Prefect server, the work pools `cpu` and `gpu` (`vgg pools`), the
deployments of prefect.yaml (`prefect deploy --all` from a copy of the repository) and two real process
workers (`vgg worker`) standing in for a CPU box and a GPU box.

The pipeline `vgg-paper` runs every stage as a flow run of its deployment; the server says which worker ran
each. Then the GPU box is lost mid-training (every process of it killed): the zombie automation marks its
flow run Crashed, the pipeline fails with that one line, the box comes back, the pipeline is run again,
finished stages are reused, training resumes from last.pt, and everything equals the uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.flows.settings import OFFLINE_ENV
from tests.helpers.prefect import api, free_port, stop, wait_for

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
#: the smallest vgg-paper whose trainings last long enough to be interrupted (about 4 minutes routed)
PARAMS = {"train_per_class": 100, "val_per_class": 5, "eval_limit": 10,
          "train_sets": ["schedule.max_epochs=2", "data.workers=0", "optim.batch_size=32", "checkpoint_every=4"],
          "digits_size": 32, "digits_scales": [48], "mosaics": 60, "mosaic_canvas": 64, "mosaic_scales": [32],
          "action_scales": [32], "loc_per_class": 5, "localise_epochs": 1, "action_images": 20}
CPU_STAGES = ("shard", "stats", "transfer")
GPU_STAGES = ("train", "evaluate", "extract", "localise")


def _copy_repo(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, check=True,
                           capture_output=True, text=True).stdout.split("\n")
    for f in filter(None, files):
        src = REPO / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            (dest / f).write_bytes(src.read_bytes())


class Team:
    """The server, the repository copy the workers run in, and the workers by machine."""

    def __init__(self, root: Path) -> None:
        self.root, self.repo, self.logs = root, root / "repo", root / "logs"
        self.repo.mkdir()
        self.logs.mkdir()
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/api"
        self.env = {**os.environ, **OFFLINE_ENV, "PREFECT_HOME": str(root / "home"),
                    "PREFECT_SERVER_API_PORT": str(port), "PREFECT_API_URL": self.url, "PREFECT_UI_API_URL": self.url,
                    "PREFECT_WORKER_QUERY_SECONDS": "2", "PATH": f"{BIN}:{os.environ['PATH']}"}
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, cmd: list[str], **env: str) -> subprocess.Popen:
        p = subprocess.Popen(cmd, cwd=self.repo, env={**self.env, **env}, stdout=open(self.logs / f"{name}.log", "a"),
                             stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = p
        return p

    def sh(self, *cmd: str) -> str:
        r = subprocess.run(cmd, cwd=self.repo, env=self.env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"{cmd}: {r.stdout[-2000:]}{r.stderr[-2000:]}"
        return r.stdout

    def worker(self, pool: str) -> subprocess.Popen:
        return self.start(f"{pool}-worker", ["vgg", "worker", "--pool", pool, "--name", f"{pool}-box"],
                          VGG_TEST_MACHINE=pool)

    def lose_machine(self, pool: str) -> int:
        """SIGKILL every process of the machine (the worker, its flow runs, training): a preempted box."""
        mine = f"VGG_TEST_MACHINE={pool}".encode()
        killed = 0
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    if mine in (d / "environ").read_bytes().split(b"\0"):
                        os.kill(int(d.name), signal.SIGKILL)
                        killed += 1
                except (OSError, ProcessLookupError):
                    pass
        return killed

    def run_parent(self, workdir: str) -> str:
        dep = api(self.url, "/deployments/name/vgg-paper/vgg-paper")
        fr = api(self.url, f"/deployments/{dep['id']}/create_flow_run",
                 {"parameters": {"config": {"workdir": workdir, **PARAMS}}})
        return fr["id"]

    def flow_run(self, fid: str) -> dict:
        return api(self.url, f"/flow_runs/{fid}")

    def wait_final(self, fid: str, timeout: float) -> dict:
        return wait_for(lambda: (r := self.flow_run(fid))["state"]["type"] in (
            "COMPLETED", "FAILED", "CRASHED", "CANCELLED") and r, timeout, f"flow run {fid} to end", interval=2)

    def children(self, fid: str) -> list[dict]:
        return api(self.url, "/flow_runs/filter",
                   {"flow_runs": {"parent_flow_run_id": {"any_": [fid]}}, "sort": "START_TIME_ASC"})

    def logs_of(self, fid: str) -> str:
        rows = api(self.url, "/logs/filter", {"logs": {"flow_run_id": {"any_": [fid]}}, "limit": 200})
        return "\n".join(r["message"] for r in rows)

    def stop_all(self) -> None:
        for p in reversed(list(self.procs.values())):
            stop(p)


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    t = Team(tmp_path_factory.mktemp("team"))
    try:
        _copy_repo(t.repo)
        t.start("server", [sys.executable, "-m", "prefect", "server", "start"])
        wait_for(lambda: api(t.url, "/health") is True, 180, "the Prefect server's /health")
        assert "created" in t.sh("vgg", "pools")
        assert "successfully created" in " ".join(t.sh("prefect", "--no-prompt", "deploy", "--all").split())
        t.worker("cpu")
        t.worker("gpu")
        yield t
    finally:
        t.stop_all()
        for name in ("cpu-worker", "gpu-worker"):  # the logs, for a failing test's report
            log = t.logs / f"{name}.log"
            if log.is_file():
                print(f"--- {name} (tail)\n" + "\n".join(log.read_text().splitlines()[-40:]))


def _numbers(path: Path) -> dict:
    """results.json without its clock readings (``seconds``; ``training``: seconds per net)."""
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if "second" not in k and k not in ("training", "wall_s")}
        return [strip(v) for v in x] if isinstance(x, list) else x
    return strip(json.loads(path.read_text()))


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    from pipeline.models import load_checkpoint

    return load_checkpoint(ckpt)["state_dict"]


def test_stages_run_on_their_pools_and_a_lost_gpu_machine_costs_only_a_rerun(team):
    # 1. uninterrupted: every stage as its own flow run, on the worker of its pool
    ref = team.wait_final(team.run_parent("runs/ref"), 900)
    assert ref["state"]["type"] == "COMPLETED", team.logs_of(ref["id"])[-3000:]
    assert ref["labels"]["prefect.worker.name"] == "cpu-box"
    kids = team.children(ref["id"])
    ran = {k["name"]: (k["deployment_id"] is not None, k["labels"].get("prefect.worker.name")) for k in kids}
    assert {"shard", "stats", "train-A", "train-D", "evaluate", "extract-digits", "transfer-caltech",
            "localise-crop"} <= set(ran), ran
    for name, (deployed, worker) in ran.items():
        assert deployed, name
        want = "cpu-box" if name.split("-")[0] in CPU_STAGES else "gpu-box"
        assert name.split("-")[0] in CPU_STAGES + GPU_STAGES and worker == want, (name, worker)

    # 2. the GPU box is lost while net A trains (after a mid-epoch last.pt, before train.json)
    runs = team.repo / "runs" / "cut" / "train"
    cut = team.run_parent("runs/cut")
    last = wait_for(lambda: next(runs.glob("*/A/checkpoints/last.pt"), None), 600, "net A's first last.pt",
                    interval=0.1)
    assert not (last.parents[1] / "train.json").exists(), "training ended before the machine was lost"
    assert team.lose_machine("gpu") >= 2
    failed = team.wait_final(cut, 300)  # the zombie automation marks the child Crashed (~93 s), the parent fails
    assert failed["state"]["type"] == "FAILED"
    msg = failed["state"]["message"] or ""
    assert "train-A crashed" in msg and "no heartbeat" in msg and "\n" not in msg.strip(), msg

    # 3. the box comes back; the same pipeline again reuses what was finished and resumes training
    shard_manifest = next((team.repo / "runs" / "cut" / "shards").glob("*/manifest.json"))
    before = shard_manifest.stat().st_mtime_ns
    team.worker("gpu")
    again = team.wait_final(team.run_parent("runs/cut"), 900)
    assert again["state"]["type"] == "COMPLETED", team.logs_of(again["id"])[-3000:]
    kids = {k["name"]: k for k in team.children(again["id"])}
    assert shard_manifest.stat().st_mtime_ns == before
    assert "nothing to do" in team.logs_of(kids["shard"]["id"])
    assert "resum" in team.logs_of(kids["train-A"]["id"]).lower()

    # 4. the same results as the uninterrupted run, to the bit for the nets
    cut_res, ref_res = (_numbers(team.repo / "runs" / w / "results.json") for w in ("cut", "ref"))
    assert cut_res == ref_res
    for net in ("A", "D"):
        a = _weights(next((team.repo / "runs" / "ref" / "train").glob(f"*/{net}/checkpoints/last.pt")))
        b = _weights(next(runs.glob(f"*/{net}/checkpoints/last.pt")))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), net
