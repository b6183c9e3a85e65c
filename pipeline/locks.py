"""Exclusive locks on output folders and files: one writing run at a time (the stages' outputs).

``vgg shard`` holds ``OUT/.lock`` while it writes a shard folder; any stage that writes one output
can do the same with :func:`exclusive`. The lock is the kernel's ``flock`` on an open file, so it
is released when the holder exits or is killed: a dead run never leaves a stale lock behind, and
the next run may safely clean the temporary files the dead one left. A second run that finds the
lock held stops at once with a one-line :class:`~pipeline.errors.UserError`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import UserError

__all__ = ["exclusive", "folder_lock", "LOCK_NAME"]

LOCK_NAME = ".lock"


@contextlib.contextmanager
def exclusive(lock_file: str | os.PathLike[str], what: str) -> Iterator[Path]:
    """Hold an exclusive lock on ``lock_file`` (created if needed) for the ``with`` block.

    Args:
        lock_file: the lock's path (its folder must exist; the file is left empty and unchanged).
        what: the output it protects, for the error message (e.g. ``"shard folder out/"``).
    Raises:
        UserError: another process holds the lock.
    """
    path = Path(lock_file)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{what} is being written by another run (lock {path} is held); "
                            "wait for it to finish or choose another output") from None
        yield path
    finally:
        os.close(fd)  # closing the last descriptor releases the flock


def folder_lock(folder: str | os.PathLike[str], what: str) -> contextlib.AbstractContextManager[Path]:
    """:func:`exclusive` on ``folder/.lock`` (the folder must exist)."""
    return exclusive(Path(folder) / LOCK_NAME, what)
