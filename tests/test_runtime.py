"""pipeline.runtime: device resolution, the process group (gloo on CPU), bf16 auto, threads, progress, the config."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import yaml

from pipeline.config import config_from, load_config
from pipeline.errors import UserError
from pipeline.runtime import (
    Progress,
    RuntimeConfig,
    autocast,
    backend_for,
    compute_threads,
    cpu_count,
    resolve_bf16,
    resolve_device,
    start_distributed,
    stop_distributed,
    torch_threads,
)

NO_CUDA = not torch.cuda.is_available()


def _cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


# ---------------------------------------------------------------- device
def test_cpu_and_auto_without_cuda():
    assert resolve_device("cpu") == torch.device("cpu")
    if NO_CUDA:
        assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.skipif(not NO_CUDA, reason="checks the error of a machine without CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu_is_a_one_line_error(name):
    with pytest.raises(UserError, match="CUDA is not available"):
        resolve_device(name)


def test_each_rank_gets_its_own_gpu(monkeypatch):
    """``auto``/``cuda`` pick GPU local_rank mod #GPUs; ``cuda:N`` is kept (the count is the machine's setting)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert [resolve_device("auto", r).index for r in range(6)] == [0, 1, 2, 3, 0, 1]
    assert resolve_device("cuda", 2) == torch.device("cuda", 2)
    assert resolve_device("cuda:3", 0) == torch.device("cuda", 3)
    monkeypatch.setenv("LOCAL_RANK", "5")
    assert resolve_device("cuda") == torch.device("cuda", 1)
    assert resolve_device("cpu") == torch.device("cpu")


def test_runtime_config_checks_the_device_name():
    assert RuntimeConfig(device="cuda:2").device == "cuda:2"
    with pytest.raises(ValueError, match="device must be"):
        RuntimeConfig(device="gpu")


# ---------------------------------------------------------------- torch.distributed
def test_backend_nccl_on_cuda_gloo_on_cpu():
    assert backend_for(torch.device("cuda", 0)) == "nccl" and backend_for("cuda") == "nccl"
    assert backend_for("cpu") == "gloo"


def test_single_process_without_torchrun(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    env = start_distributed("cpu")
    assert (env.rank, env.world, env.backend, env.owns_group, env.main) == (0, 1, None, False, True)
    stop_distributed(env)
    assert not torch.distributed.is_initialized()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str, enabled: bool) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    env = start_distributed("cpu", enabled=enabled)
    joined = torch.distributed.is_initialized()
    total = None
    if joined:
        t = torch.tensor([rank + 1.0])
        torch.distributed.all_reduce(t)
        total = t.item()
    stop_distributed(env)
    Path(out, f"rank{rank}.json").write_text(json.dumps({
        "rank": env.rank, "world": env.world, "backend": env.backend, "owned": env.owns_group, "joined": joined,
        "sum": total, "device": str(env.device), "left": not torch.distributed.is_initialized()}))


@pytest.mark.parametrize("enabled", [True, False])
def test_two_cpu_processes_join_a_gloo_group_and_leave_it(tmp_path, enabled):
    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path), enabled), nprocs=2, start_method="fork")
    got = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    if enabled:
        assert [(g["rank"], g["world"], g["backend"], g["owned"], g["sum"]) for g in got] == \
            [(0, 2, "gloo", True, 3.0), (1, 2, "gloo", True, 3.0)]
    else:  # distributed off: every process runs alone, no group
        assert all((g["world"], g["backend"], g["joined"]) == (1, None, False) for g in got)
    assert all(g["device"] == "cpu" and g["left"] for g in got)


# ---------------------------------------------------------------- bf16
def test_bf16_auto_is_on_only_where_the_cpu_has_native_bf16():
    flags = _cpu_flags()
    if not flags:
        pytest.skip("no /proc/cpuinfo flags")
    native = bool({"avx512_bf16", "amx_bf16"} & flags)
    assert resolve_bf16("auto", "cpu") is native
    assert resolve_bf16(True, "cpu") is True and resolve_bf16(False, "cpu") is False


def test_autocast_runs_matmuls_in_bf16_only_when_enabled():
    a = torch.randn(8, 8)
    with autocast("cpu", True):
        assert (a @ a).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), False):
        assert (a @ a).dtype == torch.float32


# ---------------------------------------------------------------- threads
def test_threads_are_set_for_the_block_and_restored():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before


def test_compute_threads_leave_cores_to_loader_workers():
    assert cpu_count() == len(os.sched_getaffinity(0))
    assert compute_threads(loader_workers=cpu_count() + 5) == 1
    assert compute_threads(0) == min(torch.get_num_threads(), cpu_count())


# ---------------------------------------------------------------- progress
def test_progress_off_a_terminal_logs_the_count(capsys):
    with Progress(10, "demo", unit="images", start=2) as bar:
        bar.advance(3)
        bar.note("loss 0.5")
        bar.advance(5)
    err = capsys.readouterr().err
    assert err.startswith("demo: 10/10 images") and err.rstrip().endswith("loss 0.5")
    with Progress(4, "quiet", enabled=False) as bar:
        bar.advance(4)
    assert capsys.readouterr().err == "" and bar.done == 4 and bar.percent() == 100.0


# ---------------------------------------------------------------- the config section
def test_bf16_is_one_type_with_the_spellings_of_presets_and_the_cli():
    for words, value in ((("true", "on", "yes", "1", "bf16", True, 1), True),
                         (("false", "Off", "no", "0", "fp32", False, 0), False), (("auto", None), "auto")):
        for w in words:
            assert RuntimeConfig(bf16=w).bf16 == value and type(RuntimeConfig(bf16=w).bf16) is type(value), w
    assert RuntimeConfig(bf16="on").model_dump(mode="json")["bf16"] is True  # saved configs keep bool / auto
    with pytest.raises(ValueError):
        RuntimeConfig(bf16="sometimes")
    assert resolve_bf16(True, "cpu") is True and resolve_bf16(False, "cuda") is False


def test_every_stage_config_takes_the_runtime_section(tmp_path):
    from pipeline.evaluate import EvaluateConfig
    from pipeline.features import ExtractConfig
    from pipeline.localise import LocaliseEvalConfig, LocaliseTrainConfig
    from pipeline.train import TrainConfig

    need = {ExtractConfig: {}, EvaluateConfig: {}, LocaliseEvalConfig: {"checkpoints": ["a"], "data": "d"},
            LocaliseTrainConfig: {"data": "d", "classifier": "c", "out": "o"}}
    for cls, base in need.items():
        cfg = config_from(cls, {**base, "runtime": {"device": "cpu", "bf16": "on", "threads": 3}})
        assert cfg.runtime.device == "cpu" and cfg.runtime.bf16 is True and cfg.runtime.threads == 3
        with pytest.raises(UserError, match="runtime.device"):
            config_from(cls, {**base, "runtime": {"device": "tpu"}})
        with pytest.raises(UserError, match="device"):  # the flat keys of before the runtime section are gone
            config_from(cls, {**base, "device": "cpu"})
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({"out": "o", "data": {"shards": "s"},
                                    "runtime": {"bf16": "off", "compile": True, "pin_memory": False}}))
    cfg = load_config(TrainConfig, path, ["runtime.threads=2"])
    assert (cfg.runtime.bf16, cfg.runtime.compile, cfg.runtime.pin_memory, cfg.runtime.threads) == (
        False,
        True,
        False,
        2,
    )
    assert cfg.runtime.channels_last is True and TrainConfig(out="o", data={"shards": "s"}).runtime.bf16 == "auto"
    assert ExtractConfig().runtime.bf16 is False  # training's default is auto, every other stage's off


@pytest.mark.gpu
@pytest.mark.skipif(NO_CUDA, reason="needs a CUDA device")
def test_gpu_device_and_native_bf16():
    assert resolve_device("auto").type == "cuda" and backend_for(resolve_device("auto")) == "nccl"
    assert resolve_bf16("auto", "cuda") is torch.cuda.is_bf16_supported()
