"""Flows with real Prefect: stage flows in the test harness, a deployment run triggered through a
real server's API and executed by `vgg serve`, and the UI's deployments page in headless Chromium."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from pipeline.errors import UserError
from pipeline.shipped.fashion_mnist import prepare_fashion_mnist
from tests.helpers.prefect import api, wait_for


@pytest.fixture(scope="module")
def fmnist_tiny(tmp_path_factory):
    return prepare_fashion_mnist(tmp_path_factory.mktemp("fm") / "fm", train_per_class=12, val_per_class=4)


def test_shard_and_stats_flows_call_the_stages_and_reuse_outputs(prefect_harness, fmnist_tiny, tmp_path):
    from prefect.client.orchestration import get_client

    from pipeline.flows.stages import shard_flow, stats_flow
    from pipeline.shards import ShardConfig, StatsConfig, read_manifest

    cfg = ShardConfig(source=str(fmnist_tiny), out=str(tmp_path / "shards"), workers=1, progress=False)
    res = shard_flow(cfg)
    manifest = read_manifest(tmp_path / "shards")
    assert manifest["splits"]["train"]["count"] == 120 and manifest["splits"]["val"]["count"] == 40
    assert res.manifest["fingerprint"] == manifest["fingerprint"] and res.manifest_path.is_file()
    again = shard_flow(cfg)  # a re-run reuses the finished shards (the stage's own reuse)
    assert again.nothing_to_do is True
    stats = stats_flow(StatsConfig(shards=str(tmp_path / "shards"), workers=1, progress=False))
    assert len(stats.mean) == 3 and "stats" in read_manifest(tmp_path / "shards")
    with get_client(sync_client=True) as client:
        keys = {a.key for a in client.read_artifacts()}
    assert "shard-summary" in keys


def test_train_and_evaluate_flows_pass_on_the_paths_of_real_results(prefect_harness, fmnist_tiny, tmp_path):
    """The train flow returns the result its torchrun job wrote; the evaluate flow takes the checkpoint from it."""
    from prefect.client.orchestration import get_client

    from pipeline.config import config_from
    from pipeline.evaluate import EvaluateConfig
    from pipeline.flows.stages import evaluate_flow, shard_flow, stats_flow, train_flow
    from pipeline.results import EvaluateResult, TrainResult
    from pipeline.shards import ShardConfig, StatsConfig
    from pipeline.train import TrainConfig

    shards = shard_flow(ShardConfig(source=str(fmnist_tiny), out=str(tmp_path / "shards"), workers=1, progress=False))
    stats_flow(StatsConfig(shards=str(shards.out), workers=1, progress=False))
    cfg = config_from(TrainConfig, {
        "out": str(tmp_path / "run"), "progress": False, "checkpoint_every": 0,
        "model": {"config": "A", "num_classes": 10, "width": 0.125, "fc_width": 32, "crop": 32, "dropout": 0.0},
        "data": {"shards": str(shards.out), "scale": {"s_min": 32, "s_max": 32}, "workers": 0, "shuffle_buffer": 16},
        "optim": {"batch_size": 40}, "schedule": {"max_epochs": 1}, "init": {"method": "glorot"},
        "runtime": {"bf16": False, "channels_last": False, "threads": 1}})
    trained = train_flow(cfg)
    assert isinstance(trained, TrainResult) and trained.epochs == 1 and trained.steps == 3
    with get_client(sync_client=True) as client:  # the epoch's metrics, published as training went
        arts = {a.key: a for a in client.read_artifacts()}
    assert arts["train-run-epochs"].type == "table" and "val_top1_error" in arts["train-run-epochs"].data
    assert arts["train-run-curve"].type == "markdown" and "#" in arts["train-run-curve"].data
    assert trained == TrainResult.model_validate_json(Path(trained.result_json).read_text())
    ev = evaluate_flow(EvaluateConfig(checkpoints=[trained.best], data=str(shards.out), split="val", scales=[32],
                                      out=str(tmp_path / "eval"), progress=False, runtime={"threads": 1}))
    assert isinstance(ev, EvaluateResult) and ev.n_images == 40 and ev.outputs is not None
    assert ev.nets[0]["checkpoint"] == trained.best and Path(ev.outputs.table_md).is_file()
    assert EvaluateResult.model_validate_json(Path(ev.outputs.eval).read_text()).top1_error == ev.top1_error


def test_progress_inside_a_flow_run_is_a_progress_artifact(prefect_harness):
    from prefect import flow
    from prefect.client.orchestration import get_client

    from pipeline.runtime import Progress

    @flow
    def counting() -> int:
        with Progress(5, "count things", artifact_s=0.0) as bar:
            for _ in range(5):
                bar.advance(1)
        return bar.done

    assert counting() == 5
    with get_client(sync_client=True) as client:
        arts = [a for a in client.read_artifacts() if a.key == "count-things"]
    assert arts and {a.type for a in arts} == {"progress"} and float(arts[-1].data) == 100.0


def test_only_transient_io_errors_are_retried(prefect_harness):
    from prefect import flow

    from pipeline.flows.common import stage_task

    calls = {"io": 0, "user": 0}

    def flaky(x: int) -> int:
        calls["io"] += 1
        if calls["io"] < 2:
            raise OSError(errno.EIO, "I/O error")
        return x

    def wrong(x: int) -> int:
        calls["user"] += 1
        raise UserError("bad input")

    @flow
    def f() -> int:
        t = stage_task(flaky, "flaky", retries=2).with_options(retry_delay_seconds=0)
        return t(3)

    @flow
    def g() -> int:
        return stage_task(wrong, "wrong", retries=2).with_options(retry_delay_seconds=0)(1)

    assert f() == 3 and calls["io"] == 2
    with pytest.raises(UserError):
        g()
    assert calls["user"] == 1


DEPLOYMENTS = {"shard", "stats", "train", "evaluate", "extract", "transfer", "localise", "vgg-paper"}


def _deployments(url: str) -> dict[str, dict]:
    return {d["name"]: d for d in api(url, "/deployments/filter", {})}


def test_deployment_run_triggered_through_the_api_completes(live_prefect, fmnist_tiny, tmp_path):
    url = live_prefect["url"]
    deps = wait_for(lambda: DEPLOYMENTS <= set(_deployments(url)) and _deployments(url), 180,
                    "vgg serve to register the deployments")
    run = api(url, f"/deployments/{deps['shard']['id']}/create_flow_run",
              {"parameters": {"config": {"source": str(fmnist_tiny), "out": str(tmp_path / "shards"),
                                         "workers": 1, "progress": False}}})

    def finished():
        state = api(url, f"/flow_runs/{run['id']}")["state"]
        return state if state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

    state = wait_for(finished, 240, "the triggered flow run to finish", interval=1.0)
    assert state["type"] == "COMPLETED", (state, (live_prefect["logs"] / "serve.log").read_text()[-3000:])
    arts = api(url, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run["id"]]}}})
    assert any(a["key"] == "shard-summary" for a in arts)
    assert (tmp_path / "shards" / "manifest.json").is_file()


def test_ui_deployments_page_lists_the_deployments(live_prefect):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (CI's .ci/run installs it: apt-get install chromium)")
    url = live_prefect["url"]
    wait_for(lambda: DEPLOYMENTS <= set(_deployments(url)), 180, "the deployments")
    profile = tempfile.mkdtemp(dir=live_prefect["home"])
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", f"--user-data-dir={profile}",
           "--window-size=1400,900", "--virtual-time-budget=20000", "--dump-dom",
           f"{live_prefect['ui']}/deployments"]
    dom = ""
    for _ in range(3):  # the SPA may need a second load while the server warms up
        dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
        if all(name in dom for name in ("vgg-paper", "extract", "transfer")):
            break
        time.sleep(2)
    for name in ("vgg-paper", "shard", "extract", "transfer", "localise"):
        assert name in dom, f"{name} not on the deployments page"


@pytest.mark.slow
def test_paper_flow_runs_every_stage_and_a_rerun_reuses_them(prefect_harness, tmp_path):
    """The demo's flow end to end at the smallest settings: every stage runs, tables and artifacts exist."""
    from prefect.client.orchestration import get_client

    from pipeline.flows.paper import PaperConfig, paper_flow

    cfg = PaperConfig(workdir=str(tmp_path / "demo"), train_per_class=30, val_per_class=5, eval_limit=10,
                      train_sets=["schedule.max_epochs=1", "data.workers=0", "optim.batch_size=32"],
                      digits_size=32, digits_scales=[48], mosaics=60, mosaic_canvas=64, mosaic_scales=[32],
                      action_scales=[32], loc_per_class=5, localise_epochs=1, action_images=20)
    res = paper_flow(cfg)
    text = (tmp_path / "demo" / "tables.md").read_text()
    for heading in ("Classification (Tables 3-6)", "Transfer (Table 11)", "Action classification (Table 12)",
                    "Localisation (Tables 8-9)"):
        assert heading in text
    assert "multi-crop" in text.lower() or "dense" in text.lower()
    assert 0 <= res.top1_error <= 1 and 0 <= res.caltech_recall <= 1 and 0 <= res.voc07_map <= 1
    assert all(Path(p).is_file() for p in [res.evaluate, *res.checkpoints.values(), *res.feature_stores,
                                            *res.transfer.values(), *res.localise.values()])
    results = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert results["classification"] and results["localisation"]["crop"]["baselines"]["whole_image"] is not None
    with get_client(sync_client=True) as client:
        keys = {a.key for a in client.read_artifacts()}
    assert {"vgg-paper-tables", "vgg-paper-summary", "evaluate-table"} <= keys
    t0 = time.perf_counter()
    again = paper_flow(cfg)  # every stage finds its finished output
    assert time.perf_counter() - t0 < res.seconds and again.top1_error == res.top1_error


@pytest.mark.slow
def test_reproduction_flow_publishes_its_tables(prefect_harness, tmp_path):
    """The paper-reproduction flow (quick budget, one run): stages as tasks, findings and tables as artifacts."""
    from prefect.client.orchestration import get_client

    from pipeline.flows.reproduce import reproduction_flow
    from pipeline.reproduce import ReproduceConfig

    res = reproduction_flow(ReproduceConfig(workdir=str(tmp_path / "r"), quick=True, only=["A-fixed"], progress=False))
    assert Path(res.report).is_file() and res.runs == ["A-fixed"]
    assert res.findings["depth"] is None  # D and E were not run: the finding says so instead of deciding
    with get_client(sync_client=True) as client:
        keys = {a.key for a in client.read_artifacts()}
    assert {"reproduction-findings", "reproduction-table3", "reproduction-report", "train-a-fixed-epochs",
            "train-a-fixed-curve"} <= keys
