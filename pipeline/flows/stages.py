"""One Prefect flow per stage, each calling the same ``run_<stage>(config)`` as the CLI (docs/design.md, section 8).

Parameters are the stages' pydantic configs (the UI renders them as forms). Work that splits (shard and
extraction parts) fans out as concurrent tasks on a thread pool or a Dask cluster; training launches
``torchrun`` (one process per device, any number of nodes) and streams its output into the logs.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from pipeline.config import save_config
from pipeline.errors import UserError
from pipeline.evaluate import EvaluateConfig, run_evaluate
from pipeline.features import ExtractConfig, run_extract
from pipeline.flows.common import publish_markdown, publish_table, run_task, stage_task, watch_epochs
from pipeline.io import read_json
from pipeline.localise import LocaliseEvalConfig, LocaliseTrainConfig, run_localise_evaluate, run_localise_train
from pipeline.results import (
    TRAIN_RESULT,
    EvaluateResult,
    ExtractResult,
    LocaliseEvalResult,
    LocaliseTrainResult,
    ShardResult,
    StatsResult,
    TrainResult,
    TransferResult,
)
from pipeline.shards.config import ShardConfig, StatsConfig
from pipeline.shards.run import run_shard, run_stats
from pipeline.train.checkpoints import RunPaths
from pipeline.train.config import TrainConfig
from pipeline.transfer import TransferConfig, run_transfer

__all__ = [
    "shard_flow", "stats_flow", "train_flow", "evaluate_flow", "extract_flow", "transfer_flow",
    "localise_flow", "STAGE_FLOWS", "task_runner",
]


#: a stage flow persists its result (JSON: paths and numbers) so that a pipeline that ran it as a deployment
#: reads it back (:mod:`pipeline.flows.routing`)
CHILD: dict[str, Any] = {"persist_result": True, "result_serializer": "json"}


def task_runner(max_workers: int = 2, dask_address: str | None = None):
    """A bounded thread pool, or a Dask cluster (prefect-dask) at ``dask_address``."""
    if dask_address:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=dask_address)
    return ThreadPoolTaskRunner(max_workers=max_workers)


# ---------------------------------------------------------------- shard and stats
@flow(name="shard", **CHILD, task_runner=ThreadPoolTaskRunner(max_workers=2),
      description="Shard an image collection into WebDataset tars (paper 3.1, 4 'Dataset').")
def shard_flow(config: ShardConfig, parts: int = 1) -> ShardResult:
    """With ``parts`` > 1 each part (``--part i/N``) is a concurrent task (threads by default; Dask workers,
    possibly on other machines, with ``vgg serve --dask-address``), then one task merges the parts."""
    if parts <= 1:
        res = run_task(run_shard, "shard", config)
    else:
        run = stage_task(run_shard, "shard-part")
        futures = [run.submit(config.model_copy(update={"part": f"{i}/{parts}"})) for i in range(parts)]
        for f in futures:
            f.result()
        res = run_task(run_shard, "shard-merge", config.model_copy(update={"merge": True, "part": None}))
    publish_markdown(f"Shards of `{config.source}` in `{res.out}`:\n\n```\n{res.summary()}\n```", "shard-summary",
                     "shard summary")
    return res


@flow(name="stats", **CHILD,
      description="Mean RGB and RGB covariance over the training shards (paper 2.1, 3.1 colour shift).")
def stats_flow(config: StatsConfig) -> StatsResult:
    return run_task(run_stats, "stats", config)


# ---------------------------------------------------------------- training
def torchrun_command(config_path: Path, nproc_per_node: int, nnodes: int, rdzv_endpoint: str | None,
                     resume: bool) -> list[str]:
    """The command line that trains ``config_path``: plain Python for one process, torchrun otherwise."""
    args = ["--config", str(config_path)] + (["--resume"] if resume else [])
    if nproc_per_node == 1 and nnodes == 1:
        return [sys.executable, "-m", "pipeline.train", *args]
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc_per_node}", f"--nnodes={nnodes}"]
    cmd += ["--rdzv_backend=c10d", f"--rdzv_endpoint={rdzv_endpoint}"] if rdzv_endpoint else ["--standalone"]
    return [*cmd, "-m", "pipeline.train", *args]


def artifact_key(out: Path) -> str:
    """A Prefect artifact key from a run folder's name (lowercase letters, digits and dashes)."""
    import re

    return re.sub(r"[^a-z0-9-]+", "-", out.name.lower()).strip("-") or "run"


def train_on_this_machine(config: TrainConfig, nproc_per_node: int = 1, nnodes: int = 1,
                          rdzv_endpoint: str | None = None) -> TrainResult:
    """Write the resolved config, launch torchrun on it and stream its output into the flow logs.

    The epochs are published from ``metrics.jsonl`` as they end (:func:`watch_epochs`). A signal to this
    process (a flow run cancelled from the UI, a preempted machine) reaches the training processes too
    (same process group, or forwarded here), which save ``last.pt`` at the step they reached and exit; this
    waits for them before it ends, so the rerun resumes from that step.

    Returns:
        The run's result, as rank 0 of the launched job wrote it (``train.json``).
    """
    logger = get_run_logger()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "flow-request.yaml"
    save_config(config, cfg_path)
    resume = RunPaths(out).last.is_file() and not config.resume
    cmd = torchrun_command(cfg_path, nproc_per_node, nnodes, rdzv_endpoint, resume or config.resume)
    logger.info("launching: %s", shlex.join(cmd))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    last = ""
    with watch_epochs(RunPaths(out).metrics, f"train-{artifact_key(out)}"), subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1) as p:
        assert p.stdout is not None
        try:
            for line in p.stdout:
                if line.strip():
                    logger.info(line.rstrip())
                    last = line.strip()
        except BaseException:  # this process is stopping: let training save its step, then go
            _stop_child(p, logger)
            raise
    if p.returncode != 0:
        raise UserError(_launcher_error(last, p.returncode))
    result = out / TRAIN_RESULT
    if not result.is_file():
        raise UserError(f"training exited without writing its result {result}")
    return TrainResult.model_validate(read_json(result))


def _launcher_error(last: str, code: int) -> str:
    """The training command's own last line (its one-line error or stop notice), else its status."""
    if last.startswith("error: "):
        return last[len("error: "):]
    if last.startswith("stopped by "):
        return last
    return f"training exited with status {code} (see the log above)"


def _stop_child(p: subprocess.Popen, logger: Any, grace_s: float = 25.0) -> None:
    """Forward SIGTERM to the training command (if the signal did not reach it), drain its output, wait."""
    import signal
    import threading

    if p.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(signal.SIGTERM)
    drain = threading.Thread(target=lambda: [logger.info(x.rstrip()) for x in p.stdout if x.strip()], daemon=True)
    drain.start()
    try:
        p.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    drain.join(timeout=2)


@flow(name="train", **CHILD, description="Train a VGG net with the paper's recipe (3.1), one or many processes (3.3).")
def train_flow(config: TrainConfig, nproc_per_node: int = 1, nnodes: int = 1,
               rdzv_endpoint: str | None = None) -> TrainResult:
    """A re-run continues from the run's last checkpoint (the stage's own resume)."""
    return run_task(train_on_this_machine, "train", config, nproc_per_node, nnodes, rdzv_endpoint,
                    retries=0)  # a failed run is not retried


# ---------------------------------------------------------------- evaluation
@flow(name="evaluate", **CHILD, description="Dense / multi-crop / combined evaluation and fusion (paper 3.2, 4.1-4.4).")
def evaluate_flow(config: EvaluateConfig) -> EvaluateResult:
    res = run_task(run_evaluate, "evaluate", config)
    if res.rows:
        publish_table(res.rows, "evaluate-table", "top-1 / top-5 val. error (%), Tables 3-6 format")
    return res


# ---------------------------------------------------------------- features
@flow(name="extract", **CHILD, description="Multi-scale penultimate features into an HDF5 store (paper App. B).",
      task_runner=ThreadPoolTaskRunner(max_workers=2))
def extract_flow(config: ExtractConfig, parts: int = 1) -> ExtractResult:
    """With ``parts`` > 1 the images are described by concurrent tasks (threads by default; Dask
    processes with ``vgg serve --dask-address``), then merged into one store in source order."""
    if parts <= 1:
        return run_task(run_extract, "extract", config)
    run = stage_task(run_extract, "extract-part")
    futures = [run.submit(config.model_copy(update={"part": f"{i}/{parts}"})) for i in range(parts)]
    for f in futures:
        f.result()
    return run_task(run_extract, "extract-merge", config.model_copy(update={"merge": True, "part": None}))


@flow(name="transfer", **CHILD,
      description="Linear-SVM transfer evaluation, VOC / Caltech protocols (paper App. B, Table 11).")
def transfer_flow(config: TransferConfig) -> TransferResult:
    res = run_task(run_transfer, "transfer", config)
    publish_markdown(Path(res.table).read_text(), f"transfer-{config.protocol}", f"{config.protocol}: Table 11 format")
    return res


@flow(name="localise", **CHILD, description="Train a localisation net and evaluate it (paper App. A, Tables 8-9).")
def localise_flow(train: LocaliseTrainConfig | None = None,
                  evaluate: LocaliseEvalConfig | None = None) -> dict[str, LocaliseTrainResult | LocaliseEvalResult]:
    res: dict[str, LocaliseTrainResult | LocaliseEvalResult] = {}
    if train is not None:
        res["train"] = run_task(run_localise_train, "localise-train", train)
    if evaluate is not None:
        ev = run_task(run_localise_evaluate, "localise-evaluate", evaluate)
        res["evaluate"] = ev
        publish_markdown(ev.table, f"localise-{evaluate.protocol}", "localisation error (%), Tables 8-9 format")
    return res


STAGE_FLOWS = {
    "shard": shard_flow, "stats": stats_flow, "train": train_flow, "evaluate": evaluate_flow,
    "extract": extract_flow, "transfer": transfer_flow, "localise": localise_flow,
}
