"""Where a pipeline's stages run: as tasks in the pipeline's own process, or each as a flow run of its
stage deployment on that deployment's work pool (``prefect.yaml``: CPU stages on ``cpu``, net stages on ``gpu``).

Routed, a stage is ``run_deployment("<stage>/<stage>")`` as a subflow; the child's result model (paths and
numbers) comes back through the result storage every machine shares, and a failed child fails the parent
with its own one line (docs/scaleout.md, "Where a pipeline's stages run"). ``auto`` routes when the
pipeline itself runs from a deployment on a work pool; ``vgg demo`` and ``vgg serve`` stay in-process.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pipeline.errors import UserError

__all__ = ["Routing", "Router", "deployment_of", "child_error"]

Routing = Literal["auto", "in-process", "deployments"]


def _stage_functions() -> dict[Callable[..., Any], tuple[str, str | None]]:
    """Stage function -> (deployment, the stage flow's parameter that takes its config; None: ``config``)."""
    from pipeline.evaluate import run_evaluate
    from pipeline.features import run_extract
    from pipeline.flows.stages import train_on_this_machine
    from pipeline.localise import run_localise_evaluate, run_localise_train
    from pipeline.shards.run import run_shard, run_stats
    from pipeline.transfer.run import run_transfer

    return {run_shard: ("shard", None), run_stats: ("stats", None), train_on_this_machine: ("train", None),
            run_evaluate: ("evaluate", None), run_extract: ("extract", None), run_transfer: ("transfer", None),
            run_localise_train: ("localise", "train"), run_localise_evaluate: ("localise", "evaluate")}


def deployment_of(fn: Callable[..., Any]) -> tuple[str, str | None] | None:
    """The stage deployment that runs ``fn`` (its flow and deployment share the name), or None."""
    return _stage_functions().get(getattr(fn, "__wrapped__", fn))


def child_error(name: str, state: Any) -> str:
    """The one line a failed child leaves its parent: the stage's own message where it has one."""
    msg = (state.message or "").strip()
    for prefix in ("Flow run encountered an exception. ", "Task run encountered an exception "):
        msg = msg.removeprefix(prefix)
    return f"stage {name} {state.name.lower()}: {' '.join(msg.split()) or 'no message'}"


def _in_process(fn: Callable[..., Any], name: str, retries: int, config: Any, *args: Any, **extra: Any) -> Any:
    """The stage as a task of this flow run; a training run in this process publishes its epochs as they end."""
    from pipeline.flows.common import run_task, watch_epochs
    from pipeline.train import run_train

    if fn is not run_train:
        return run_task(fn, name, config, *args, retries=retries, **extra)
    from pipeline.flows.stages import artifact_key
    from pipeline.train.checkpoints import RunPaths

    with watch_epochs(RunPaths(Path(config.out)).metrics, f"train-{artifact_key(Path(config.out))}"):
        return run_task(fn, name, config, *args, retries=retries, **extra)


def _runs_on_a_pool() -> bool:
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    return bool(ctx and ctx.flow_run and ctx.flow_run.deployment_id and ctx.flow_run.work_pool_name)


class Router:
    """``Router(mode).route(fn, name)`` -> a callable running the stage ``fn`` in-process or as a deployment."""

    def __init__(self, mode: Routing = "auto") -> None:
        self.routed = mode == "deployments" or (mode == "auto" and _runs_on_a_pool())

    def route(self, fn: Callable[..., Any], name: str) -> Callable[..., Any]:
        target = deployment_of(fn)
        if not self.routed or target is None:
            return functools.partial(_in_process, fn, name, 0 if target and target[0] == "train" else 2)
        deployment, param = target

        def run(config: Any, **extra: Any) -> Any:
            return self._run_child(deployment, param, name, config, extra)

        return run

    __call__ = route

    @staticmethod
    def _run_child(deployment: str, param: str | None, name: str, config: Any, extra: dict[str, Any]) -> Any:
        from prefect import get_run_logger
        from prefect.deployments import run_deployment

        params = {param or "config": config.model_dump(mode="json"), **extra}
        get_run_logger().info("stage %s -> deployment %s/%s", name, deployment, deployment)
        fr = run_deployment(f"{deployment}/{deployment}", parameters=params, flow_run_name=name, timeout=None,
                            poll_interval=2)
        state = fr.state
        if state is None or not state.is_completed():
            raise UserError(child_error(name, state) if state is not None else f"stage {name}: no state")
        res = state.result()
        return res[param] if param else res
