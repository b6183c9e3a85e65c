"""One Prefect flow per stage, each calling the same ``run_<stage>(config)`` as the CLI.

Parameters are the stages' pydantic configs, so the Prefect UI renders them as forms with the
fields' descriptions and defaults. Work that splits fans out as concurrent tasks (extraction parts;
shard splits run by the stage's own worker processes); the task runner is a bounded thread pool by
default and a Dask cluster when ``dask_address`` is given. Training runs as a task that launches
``torchrun`` (one process per device, any number of nodes) and streams its output into the logs.
"""

from __future__ import annotations

import csv
import io
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from flows.common import publish_markdown, publish_table, stage_task
from pipeline.config import save_config
from pipeline.errors import UserError
from pipeline.evaluate.stage import EvaluateConfig, run_evaluate
from pipeline.features.extract import ExtractConfig, run_extract
from pipeline.localise.evaluate import LocaliseEvalConfig, run_localise_evaluate
from pipeline.localise.train import LocaliseTrainConfig, run_localise_train
from pipeline.shards.config import ShardConfig, StatsConfig
from pipeline.shards.stats import run_stats
from pipeline.shards.writer import run_shard
from pipeline.train.config import TrainConfig
from pipeline.transfer.stage import TransferConfig, run_transfer

__all__ = [
    "shard_flow", "stats_flow", "train_flow", "evaluate_flow", "extract_flow", "transfer_flow",
    "localise_flow", "STAGE_FLOWS", "task_runner",
]


def task_runner(max_workers: int = 2, dask_address: str | None = None):
    """A bounded thread pool, or a Dask cluster (prefect-dask) at ``dask_address``."""
    if dask_address:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=dask_address)
    return ThreadPoolTaskRunner(max_workers=max_workers)


def _as_dict(result: Any) -> dict[str, Any]:
    if hasattr(result, "model_dump"):
        return result.model_dump(mode="json")
    if hasattr(result, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(result)
    return dict(result)


def _publish_file_table(path: Path, key: str, description: str) -> None:
    """Publish a results table written by a stage: CSV as a table artifact, Markdown as markdown."""
    if path.suffix == ".csv" and path.is_file():
        rows = list(csv.DictReader(io.StringIO(path.read_text())))
        if rows:
            publish_table(rows, key, description)
    elif path.is_file():
        publish_markdown(path.read_text(), key, description)


# ---------------------------------------------------------------- shard and stats
@flow(name="shard", description="Shard an image collection into WebDataset tars (paper 3.1, 4 'Dataset').")
def shard_flow(config: ShardConfig) -> dict[str, Any]:
    res = _as_dict(stage_task(run_shard, "shard")(config))
    publish_markdown(f"Shards of `{config.source}` in `{config.out}`:\n\n```\n{res}\n```", "shard-summary",
                     "shard summary")
    return res


@flow(name="stats", description="Mean RGB and RGB covariance over the training shards (paper 2.1, 3.1 colour shift).")
def stats_flow(config: StatsConfig) -> dict[str, Any]:
    return _as_dict(stage_task(run_stats, "stats")(config))


# ---------------------------------------------------------------- training
def torchrun_command(config_path: Path, nproc_per_node: int, nnodes: int, rdzv_endpoint: str | None,
                     resume: bool) -> list[str]:
    """The command line that trains ``config_path``: plain Python for one process, torchrun otherwise."""
    args = ["--config", str(config_path)] + (["--resume"] if resume else [])
    if nproc_per_node == 1 and nnodes == 1:
        return [sys.executable, "-m", "pipeline.train", *args]
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc_per_node}", f"--nnodes={nnodes}"]
    cmd += [f"--rdzv_backend=c10d", f"--rdzv_endpoint={rdzv_endpoint}"] if rdzv_endpoint else ["--standalone"]
    return [*cmd, "-m", "pipeline.train", *args]


def launch_training(config: TrainConfig, nproc_per_node: int = 1, nnodes: int = 1,
                    rdzv_endpoint: str | None = None) -> dict[str, Any]:
    """Write the resolved config, launch torchrun on it and stream its output into the flow logs."""
    logger = get_run_logger()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "flow-request.yaml"
    save_config(config, cfg_path)
    resume = (out / "checkpoints" / "last.pt").is_file() and not config.resume
    cmd = torchrun_command(cfg_path, nproc_per_node, nnodes, rdzv_endpoint, resume or config.resume)
    logger.info("launching: %s", shlex.join(cmd))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    error = ""
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1) as p:
        assert p.stdout is not None
        for line in p.stdout:
            if line.strip():
                logger.info(line.rstrip())
            error = line.strip()[len("error: "):] if line.startswith("error: ") else error  # the CLI's one line
    if p.returncode != 0:
        raise UserError(error or f"training exited with status {p.returncode} (see the log above)")
    summary = out / "summary.json"
    if summary.is_file():
        from pipeline.io import read_json

        return read_json(summary)
    return {"out": str(out), "best": str(out / "checkpoints" / "best.pt"), "last": str(out / "checkpoints" / "last.pt")}


launch_training = stage_task(launch_training, "train", retries=0)  # a failed run is not retried


@flow(name="train", description="Train a VGG net with the paper's recipe (3.1), one or many processes (3.3).")
def train_flow(config: TrainConfig, nproc_per_node: int = 1, nnodes: int = 1, rdzv_endpoint: str | None = None) -> dict[str, Any]:
    """A re-run continues from the run's last checkpoint (the stage's own resume)."""
    return launch_training(config, nproc_per_node, nnodes, rdzv_endpoint)


# ---------------------------------------------------------------- evaluation
@flow(name="evaluate", description="Dense / multi-crop / combined evaluation and fusion (paper 3.2, 4.1-4.4).")
def evaluate_flow(config: EvaluateConfig) -> dict[str, Any]:
    res = stage_task(run_evaluate, "evaluate")(config)
    if res.get("rows"):
        publish_table(res["rows"], "evaluate-table", "top-1 / top-5 val. error (%), Tables 3-6 format")
    return res


# ---------------------------------------------------------------- features
@flow(name="extract", description="Multi-scale penultimate features into an HDF5 store (paper App. B).",
      task_runner=ThreadPoolTaskRunner(max_workers=2))
def extract_flow(config: ExtractConfig, parts: int = 1) -> dict[str, Any]:
    """With ``parts`` > 1 the images are described by concurrent tasks (threads by default; Dask
    processes with ``vgg serve --dask-address``), then merged into one store in source order."""
    if parts <= 1:
        return stage_task(run_extract, "extract")(config)
    run = stage_task(run_extract, "extract-part")
    futures = [run.submit(config.model_copy(update={"part": f"{i}/{parts}"})) for i in range(parts)]
    for f in futures:
        f.result()
    return stage_task(run_extract, "extract-merge")(config.model_copy(update={"merge": True, "part": None}))


@flow(name="transfer", description="Linear-SVM transfer evaluation, VOC / Caltech protocols (paper App. B, Table 11).")
def transfer_flow(config: TransferConfig) -> dict[str, Any]:
    res = stage_task(run_transfer, "transfer")(config)
    out = Path(res.get("out") or res.get("outputs", {}).get("dir", "."))
    _publish_file_table(out / "table.md", f"transfer-{config.protocol}", f"{config.protocol}: Table 11 format")
    return res


@flow(name="localise", description="Train a localisation net and evaluate it (paper App. A, Tables 8-9).")
def localise_flow(train: LocaliseTrainConfig | None = None, evaluate: LocaliseEvalConfig | None = None) -> dict[str, Any]:
    res: dict[str, Any] = {}
    if train is not None:
        res["train"] = stage_task(run_localise_train, "localise-train")(train)
    if evaluate is not None:
        ev = stage_task(run_localise_evaluate, "localise-evaluate")(evaluate)
        res["evaluate"] = ev
        publish_markdown(ev.get("table", ""), f"localise-{evaluate.protocol}", "localisation error (%), Tables 8-9 format")
    return res


STAGE_FLOWS = {
    "shard": shard_flow, "stats": stats_flow, "train": train_flow, "evaluate": evaluate_flow,
    "extract": extract_flow, "transfer": transfer_flow, "localise": localise_flow,
}
