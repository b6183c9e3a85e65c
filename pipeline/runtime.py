"""Where and how the stages run (paper 3.3): device, torch.distributed, bf16 autocast, CPU threads, progress.

Every stage that runs a net takes the same :class:`RuntimeConfig` section (``runtime:`` in YAML) and calls
the helpers here: :func:`resolve_device`, :func:`start_distributed` (NCCL on CUDA, gloo on CPU),
:func:`resolve_bf16` (``auto``: on where bf16 is native, GPUs and CPUs with AVX512-BF16 or AMX) and
:func:`autocast`, CPU threads, and :class:`Progress` (a rich bar on a terminal, a Prefect progress
artifact inside a flow run, log lines otherwise). torch and prefect are imported where used.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator

from pipeline.config import ConfigSection, StageConfig
from pipeline.errors import UserError

if TYPE_CHECKING:
    import torch

__all__ = [
    "Bf16", "RuntimeConfig", "RuntimeStageConfig", "resolve_device", "is_usable_cuda", "backend_for", "DistEnv",
    "start_distributed", "stop_distributed", "native_bf16", "resolve_bf16", "autocast", "cpu_count",
    "compute_threads", "torch_threads", "Progress", "log",
]


# ---------------------------------------------------------------- the config section
_BF16_WORDS = {"auto": "auto", "true": True, "on": True, "yes": True, "1": True, "bf16": True,
               "false": False, "off": False, "no": False, "0": False, "fp32": False}


def _bf16_value(value: Any) -> Any:
    """``runtime.bf16`` from any of its spellings: true/false, on/off, yes/no, 1/0, bf16/fp32, auto (None: auto)."""
    if value is None:
        return "auto"
    if isinstance(value, str) and value.strip().lower() in _BF16_WORDS:
        return _BF16_WORDS[value.strip().lower()]
    return value


#: bf16 autocast as configured: on, off, or ``auto`` (where native); :func:`resolve_bf16` makes it a bool, once
Bf16 = Annotated[bool | Literal["auto"], BeforeValidator(_bf16_value)]


class RuntimeConfig(ConfigSection):
    """Where and how a stage runs its nets; none of these change what is computed beyond bf16 rounding."""

    device: str = Field("auto", description="auto (this rank's GPU when CUDA is available, else CPU), cpu, cuda "
                                            "or cuda:N")
    bf16: Bf16 = Field(False, description="bf16 autocast (results differ slightly from float32); auto = on where "
                                          "bf16 is native (GPUs, CPUs with AVX512-BF16/AMX)")
    channels_last: bool = Field(False, description="NHWC memory format (faster with bf16 on AMX CPUs and GPUs)")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: the stage's own rule)")

    @field_validator("device")
    @classmethod
    def _device_form(cls, v: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", v):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {v!r}")
        return v


class RuntimeStageConfig(StageConfig):
    """A stage config with a ``runtime`` section."""

    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig, description="device, bf16, channels_last, threads")


# ---------------------------------------------------------------- device
def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def resolve_device(pref: str = "auto", local_rank: int | None = None) -> torch.device:
    """The device ``pref`` (``auto``: a GPU when CUDA is available, else the CPU; ``cpu``, ``cuda``, ``cuda:N``)
    names for this process: ``auto`` and ``cuda`` pick GPU ``local_rank mod #GPUs`` (default: ``$LOCAL_RANK``).
    CUDA requested but not available is a UserError."""
    import torch

    if pref == "cpu" or (pref == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError(f"device {pref!r} requested but CUDA is not available")
    if pref.startswith("cuda:"):
        return torch.device(pref)
    rank = _local_rank() if local_rank is None else local_rank
    return torch.device("cuda", rank % torch.cuda.device_count())


def is_usable_cuda(device: torch.device | str) -> bool:
    """True when ``device`` is a CUDA device and CUDA is available to this process (the one place that asks)."""
    import torch

    return torch.device(device).type == "cuda" and torch.cuda.is_available()


# ---------------------------------------------------------------- torch.distributed
def backend_for(device: torch.device | str) -> str:
    """NCCL for CUDA devices, gloo for CPUs."""
    import torch

    return "nccl" if torch.device(device).type == "cuda" else "gloo"


@dataclass
class DistEnv:
    """This process's place in the run."""

    rank: int
    world: int
    local_rank: int
    device: torch.device
    backend: str | None  # None: a single process
    owns_group: bool  # start_distributed created the process group (and stop_distributed ends it)

    @property
    def main(self) -> bool:
        """Rank 0 writes outputs and shows progress."""
        return self.rank == 0


def start_distributed(device: str = "auto", enabled: bool = True) -> DistEnv:
    """Join the process group that ``torchrun`` describes (if any; not ``enabled``: one process even under
    torchrun) and pick this rank's ``runtime.device``. A group set up by the caller (tests, notebooks) is joined,
    not owned; ``backend`` is None for a single process."""
    import torch
    import torch.distributed as dist

    if enabled and dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", rank))
        dev = resolve_device(device, local)
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        return DistEnv(rank, world, local, dev, dist.get_backend(), owns_group=False)
    world = int(os.environ.get("WORLD_SIZE", "1")) if enabled else 1
    rank, local = (int(os.environ.get("RANK", "0")), _local_rank()) if world > 1 else (0, 0)
    dev = resolve_device(device, local if world > 1 else None)
    if world <= 1:
        return DistEnv(0, 1, 0, dev, None, owns_group=False)
    backend = backend_for(dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)  # NCCL collectives (and object collectives) use the current device
    dist.init_process_group(backend=backend, rank=rank, world_size=world,
                            device_id=dev if dev.type == "cuda" else None)
    return DistEnv(rank, world, local, dev, backend, owns_group=True)


def stop_distributed(env: DistEnv, finished: bool = False) -> None:
    """Leave the process group if :func:`start_distributed` created it. ``finished`` (every rank got here
    without an error): wait for the others first, so no rank tears its connections down while another still
    uses them (gloo aborts the process then: "terminate called without an active exception")."""
    import torch.distributed as dist

    if env.owns_group and dist.is_initialized():
        if finished and env.world > 1:
            dist.barrier()
        dist.destroy_process_group()


# ---------------------------------------------------------------- bf16
def native_bf16(device: torch.device | str = "cpu") -> bool:
    """True if bf16 autocast is native (fast) on ``device``."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_bf16(setting: Bf16, device: torch.device | str) -> bool:
    """``runtime.bf16`` for ``device``: a bool as given, ``auto`` = :func:`native_bf16`."""
    return native_bf16(device) if setting == "auto" else bool(setting)


def autocast(device: torch.device | str, enabled: bool):
    """bf16 autocast on ``device`` when ``enabled`` (a no-op context otherwise)."""
    import torch

    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=enabled)


# ---------------------------------------------------------------- CPU threads
def cpu_count() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def compute_threads(loader_workers: int, ranks_here: int = 1) -> int:
    """torch CPU threads that leave a core to each loader worker and share the rest among the ranks.

    Oversubscribing the cores (compute threads + loader workers + other ranks) makes OpenMP's
    waiting threads spin against each other: several times slower on a busy two-core machine.
    """
    import torch

    return max(1, min(torch.get_num_threads(), cpu_count() // ranks_here - loader_workers))


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch CPU threads (None: leave as is), then restore the count."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------- progress
def log(msg: str, enabled: bool = True) -> None:
    """One line to stderr (the stages' plain log)."""
    if enabled:
        print(msg, file=sys.stderr, flush=True)


def _prefect_run() -> bool:
    """True inside a Prefect flow or task run (prefect is only looked at if something imported it)."""
    if "prefect" not in sys.modules:
        return False
    try:
        from prefect.context import FlowRunContext, TaskRunContext
    except ImportError:  # pragma: no cover - a partial prefect install
        return False
    return TaskRunContext.get() is not None or FlowRunContext.get() is not None


class Progress:
    """``with Progress(total, "train") as p: p.advance(n)``; silent when not ``enabled``.

    Inside a Prefect flow or task run: a progress artifact (the run's Artifacts tab) updated every
    ``artifact_s`` seconds. On a terminal: a rich bar with the rate. Elsewhere: a log line every
    ``every_s`` seconds. A log line at the end unless on a terminal. ``note(text)`` shows extra
    text (loss, lr).
    """

    def __init__(self, total: int | None, desc: str, enabled: bool = True, every_s: float = 10.0,
                 unit: str = "images", start: int = 0, artifact_s: float = 2.0) -> None:
        self.total, self.desc, self.enabled, self.every_s, self.unit = total, desc, enabled, every_s, unit
        self.done, self._start, self.artifact_s = start, start, artifact_s
        self.text = ""
        self._bar: Any = None
        self._task: Any = None
        self._artifact: Any = None
        self._t0 = self._last = self._last_artifact = time.monotonic()

    def __enter__(self) -> Progress:
        if not self.enabled:
            return self
        if _prefect_run():
            self._artifact_create()
        elif sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as Bar

            self._bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[rate]}"), TextColumn("{task.fields[text]}"),
                            TimeRemainingColumn(), console=Console(stderr=True), transient=False)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.desc, total=self.total, completed=self.done, rate="", text="")
        return self

    def rate(self) -> float:
        """Items per second so far (counting from ``start``)."""
        return (self.done - self._start) / max(time.monotonic() - self._t0, 1e-9)

    def _line(self) -> str:
        of = f"/{self.total}" if self.total is not None else ""
        return f"{self.desc}: {self.done}{of} {self.unit}, {self.rate():.1f} {self.unit}/s" + \
            (f", {self.text}" if self.text else "")

    def note(self, text: str) -> None:
        """Extra text shown beside the count (e.g. the loss)."""
        self.text = text
        if self._bar is not None:
            self._bar.update(self._task, text=text)

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more items done."""
        self.done += n
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(self._task, advance=n, rate=f"{self.rate():.1f} {self.unit}/s")
            return
        now = time.monotonic()
        if self._artifact is not None:
            if now - self._last_artifact >= self.artifact_s:
                self._last_artifact = now
                self._artifact_update()
        elif now - self._last >= self.every_s:
            self._last = now
            log(self._line())

    def percent(self) -> float:
        """Done as a percentage of ``total`` (0 when the total is unknown)."""
        return 100.0 * min(1.0, self.done / self.total) if self.total else 0.0

    def _artifact_create(self) -> None:
        from prefect.artifacts import create_progress_artifact

        key = re.sub(r"[^a-z0-9]+", "-", self.desc.lower()).strip("-")[:60] or None
        try:
            self._artifact = create_progress_artifact(self.percent(), key=key, description=self.desc)
        except Exception as e:  # noqa: BLE001 - progress must never fail the stage; say why it is missing
            log(f"{self.desc}: no progress artifact ({type(e).__name__}: {e})")

    def _artifact_update(self) -> None:
        from prefect.artifacts import update_progress_artifact

        try:
            update_progress_artifact(self._artifact, self.percent(), description=self._line())
        except Exception as e:  # noqa: BLE001 - as above: stop updating, keep running
            log(f"{self.desc}: progress artifact not updated ({type(e).__name__}: {e})")
            self._artifact = None

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
            return
        if self._artifact is not None:
            self._artifact_update()
        if self.enabled and exc[0] is None:
            log(self._line())
