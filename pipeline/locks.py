"""Exclusive locks on output folders and files: one writing run at a time (the kernel's ``flock``, released
when the holder exits or is killed, so a dead run leaves no stale lock and the next may clean its temporary files)."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import UserError

__all__ = ["exclusive", "folder_lock"]


@contextlib.contextmanager
def exclusive(lock_file: str | os.PathLike[str], what: str) -> Iterator[Path]:
    """Hold an exclusive lock on ``lock_file`` (created empty if needed; its folder must exist) for the block.

    ``what`` names the output it protects in the one-line UserError of a second run (``"shard folder out/"``).
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
    return exclusive(Path(folder) / ".lock", what)
