"""Preemption and Ctrl-C: SIGTERM and SIGINT stop a stage at a safe point (paper 3.1/3.3 training; shard, extract).

The one place that handles the two signals; docs/scaleout.md, "Preemption and Ctrl-C".
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

__all__ = ["Stopped", "SIGNALS", "stop_on_signals", "requested", "blocked", "worker_init"]

#: the signals that stop a run: preemption and Ctrl-C
SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)


class Stopped(BaseException):
    """A run stopped by a signal (a BaseException: no ``except Exception`` of a stage swallows it)."""

    def __init__(self, signum: int, where: str = "") -> None:
        super().__init__(signum, where)
        self.signum, self.where = int(signum), where

    @property
    def name(self) -> str:
        """``SIGTERM``, ``SIGINT``."""
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """The shell's status of a process ended by the signal: 143 for SIGTERM, 130 for SIGINT."""
        return 128 + self.signum

    def __str__(self) -> str:
        return f"stopped by {self.name}{' ' + self.where if self.where else ''}; rerun to resume"


@dataclass
class _State:
    signum: int | None = None  #: the first signal received in the outermost block (None: none yet)
    depth: int = 0  #: nested stop_on_signals blocks
    defer: int = 0  #: nested deferring blocks among them
    previous: dict[int, Any] = field(default_factory=dict)  #: the handlers the outermost block replaced
    raised: bool = False  #: Stopped raised and not yet out of the block (a raise Python may have swallowed)


_state = _State()


def _main_rank() -> bool:
    return os.environ.get("RANK", "0") in ("", "0")


def _redeliver(signum: int) -> None:
    """A Stopped raised while Python ran a weakref callback or ``__del__`` is printed and dropped ("Exception
    ignored in ..."): while the block has not ended, deliver the signal once more."""
    if _state.raised:
        os.kill(os.getpid(), signum)


def _unraisable(hook: Any) -> Any:
    """``sys.unraisablehook`` while a block runs: a swallowed Stopped is not printed (it is delivered again)."""
    def quiet(info: Any) -> None:
        if not isinstance(info.exc_value, Stopped):
            hook(info)

    return quiet


def _handler(signum: int, frame: FrameType | None) -> None:
    if _state.raised and not _state.defer:  # the redelivery of a raise that was swallowed
        _arm_and_raise(signum)
    if _state.signum is not None:  # a second signal: no more waiting
        if _main_rank():
            print(f"stopped by a second {signal.Signals(signum).name}: aborted at once; rerun to resume from the "
                  "last checkpoint", file=sys.stderr, flush=True)
        os._exit(128 + signum)
    _state.signum = signum
    if not _state.defer:
        _arm_and_raise(signum)


def _arm_and_raise(signum: int) -> None:
    _state.raised = True
    t = threading.Timer(0.5, _redeliver, (signum,))
    t.daemon = True
    t.start()
    raise Stopped(signum)


def requested() -> int | None:
    """The signal received so far in a deferring block (None: none)."""
    return _state.signum


@contextmanager
def stop_on_signals(defer: bool = False) -> Iterator[None]:
    """Stop the block on SIGTERM / SIGINT: raise :class:`Stopped` at once, or with ``defer`` only record it
    (nested blocks and threads: docs/scaleout.md)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    outermost = _state.depth == 0
    if outermost:
        _state.signum = None
        _state.previous = {s: signal.signal(s, _handler) for s in SIGNALS}
        hook, sys.unraisablehook = sys.unraisablehook, _unraisable(sys.unraisablehook)
    _state.depth += 1
    _state.defer += int(defer)
    ok = False
    try:
        yield
        ok = True
    finally:
        _state.raised = False  # a Stopped raised in the block has left it (or none was raised)
        _state.depth -= 1
        _state.defer -= int(defer)
        pending = _state.signum
        if outermost:
            for s, h in _state.previous.items():
                signal.signal(s, h)
            sys.unraisablehook = hook
            _state.previous, _state.signum = {}, None
    if ok and defer and pending is not None and not _state.defer:  # deferred, never raised: deliver it now
        if outermost:
            signal.raise_signal(pending)  # to the handler that was there before
        else:
            raise Stopped(pending)


@contextmanager
def blocked() -> Iterator[None]:
    """Hold SIGTERM and SIGINT back in this thread for the block (while worker processes are started:
    they inherit the mask and are set up by :func:`worker_init` before any signal reaches them)."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _obey_parent(parent: int) -> None:
    while True:
        info = signal.sigwaitinfo({signal.SIGTERM})
        if info.si_pid == parent:  # the parent's terminate(): a quiet exit, as torch's own worker handler does
            os._exit(0)


def worker_init(parent: int, *_: Any) -> None:
    """Initialiser of a worker process of ``parent`` (DataLoader ``worker_init_fn``, a Pool ``initializer``).

    SIGINT is ignored; SIGTERM is taken by a thread that exits the process only when ``parent`` sent it
    and ignores it otherwise: the main process alone decides when to stop, and stops its workers.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # before any thread: all of them inherit it
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    threading.Thread(target=_obey_parent, args=(parent,), name="sigterm-from-parent", daemon=True).start()
