"""Pieces every flow uses: the stage as a plain task with I/O-only retries, and result artifacts.

No stage logic lives here: a task calls the stage's ``run_<stage>(config)`` and turns its result
into what users look at in the UI (tables in the paper's format, a run summary). A task failing
with an expected error (:func:`pipeline.errors.is_expected`) ends Failed with the same one-line
message the CLI prints, without a traceback in the logs; transient I/O errors are retried first.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import functools
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prefect import Task, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.states import Failed

from pipeline.errors import UserError, is_expected, one_line
from pipeline.results import StageResult

__all__ = ["transient_only", "one_line_failures", "stage_task", "run_task", "publish_table", "publish_markdown",
           "markdown_table",
           "EpochMetrics", "watch_epochs"]

#: OSErrors that are deterministic (a wrong path stays wrong): never retried.
_PERMANENT = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, FileExistsError)


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, (UserError, *_PERMANENT)):
        return False
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    return isinstance(exc, OSError) and exc.errno not in (errno.ENOSPC, errno.EROFS)


def transient_only(task_, task_run, state) -> bool:
    """Retry condition: only I/O errors that can pass (EIO, timeouts, connection errors)."""
    try:
        state.result()
    except BaseException as e:  # noqa: BLE001 - anything else is deterministic
        return _transient(e)
    return False


def one_line_failures(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn``, logging a stage result's ``summary()`` (what the CLI prints), and returning a Failed state with
    the one-line message for expected, non-transient errors."""
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            result = fn(*args, **kwargs)
            if isinstance(result, StageResult):
                get_run_logger().info("%s", result.summary())
            return result
        except Exception as e:  # noqa: BLE001 - sorted below; bugs and transient errors are raised
            if not is_expected(e) or _transient(e):
                raise
            get_run_logger().error("error: %s", one_line(e))
            return Failed(message=one_line(e), data=e)

    return run


def stage_task(fn: Callable[..., Any], name: str, retries: int = 2) -> Task:
    """The stage function as a plain Prefect task: backoff retries for transient I/O errors only; an
    expected failure ends it Failed with the one-line message (:func:`one_line_failures`)."""
    return task(one_line_failures(fn), name=name, retries=retries, retry_delay_seconds=[5, 30, 120][:retries] or 0,
                retry_condition_fn=transient_only, log_prints=True)


def run_task(fn: Callable[..., Any], name: str, *args: Any, retries: int = 2, **kwargs: Any) -> Any:
    """Run the stage function as its task (:func:`stage_task`) and return its result; a failed task raises its error."""
    return stage_task(fn, name, retries)(*args, return_state=True, **kwargs).result()


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of dict rows (columns in first-row order)."""
    if not rows:
        return "(no rows)"
    cols = list(rows[0])
    fmt = lambda v: f"{v:.2f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def publish_table(rows: list[dict[str, Any]], key: str, description: str) -> None:
    """A table artifact (UI: Artifacts tab of the run); keys must be lowercase-dashed."""
    create_table_artifact(table=rows, key=key, description=description)
    get_run_logger().info("%s\n%s", description, markdown_table(rows))


def publish_markdown(text: str, key: str, description: str) -> None:
    """A markdown artifact."""
    create_markdown_artifact(markdown=text, key=key, description=description)


def _curve(rows: list[dict[str, Any]], width: int = 40) -> str:
    """Validation top-1 error per epoch as a text bar chart (the artifact's curve)."""
    top = max(r["val_top1_error"] for r in rows) or 1.0
    lines = ["epoch  val top-1 err %"]
    lines += [f"{r['epoch']:5d}  {r['val_top1_error']:6.2f}  " + "#" * max(1, round(width * r["val_top1_error"] / top))
              for r in rows]
    return "```\n" + "\n".join(lines) + "\n```"


class EpochMetrics:
    """Publishes a training run's per-epoch metrics (``metrics.jsonl``) as a table artifact and a curve.

    ``poll()`` reads the file and publishes when a new epoch has been validated; call it as the run
    goes (the torchrun launcher on each output line, :func:`watch_epochs` from a thread).
    """

    def __init__(self, metrics: str | Path, key: str) -> None:
        self.path, self.key, self.seen = Path(metrics), key, 0

    def rows(self) -> list[dict[str, Any]]:
        from pipeline.train.checkpoints import val_rows

        return [{"epoch": r["epoch"], "val_top1_error": round(100 * (1 - r["top1"]), 2),
                 "val_top5_error": round(100 * (1 - r["top5"]), 2), "lr": r.get("lr"), "event": r.get("event", "")}
                for r in val_rows(self.path)]

    def poll(self) -> bool:
        rows = self.rows()
        if len(rows) == self.seen:
            return False
        self.seen = len(rows)
        create_table_artifact(table=rows, key=f"{self.key}-epochs", description="per-epoch validation metrics")
        create_markdown_artifact(markdown=_curve(rows), key=f"{self.key}-curve",
                                 description="validation top-1 error by epoch")
        return True


@contextlib.contextmanager
def watch_epochs(metrics: str | Path, key: str, every_s: float = 5.0) -> Iterator[EpochMetrics]:
    """Publish ``metrics``' epochs from a thread (in the caller's Prefect run context) while the block runs."""
    pub, stop = EpochMetrics(metrics, key), threading.Event()
    ctx = contextvars.copy_context()

    def loop() -> None:
        while not stop.wait(every_s):
            with contextlib.suppress(Exception):  # a failed artifact upload never stops training
                ctx.run(pub.poll)

    t = threading.Thread(target=loop, daemon=True, name=f"epochs-{key}")
    t.start()
    try:
        yield pub
    finally:
        stop.set()
        t.join()
        with contextlib.suppress(Exception):
            ctx.run(pub.poll)
