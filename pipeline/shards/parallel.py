"""An ordered, bounded map over worker processes (paper 3.1's data-parallel pre-processing, on one machine).

Results come in submission order with a few chunks in flight, so memory stays bounded and the shards
do not depend on the number of workers. Workers are forked where the platform allows it (create the
pool before starting threads such as a progress bar) and leave SIGINT / SIGTERM to this process
(:func:`pipeline.signals.worker_init`).
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from pipeline import signals
from pipeline.runtime import Progress, cpu_count

__all__ = ["WorkerPool", "cpu_count", "resolve_workers", "map_shards"]

T = TypeVar("T")


def resolve_workers(workers: int) -> int:
    """0 -> all cores; otherwise as given."""
    return cpu_count() if workers <= 0 else workers


class WorkerPool:
    """``with WorkerPool(n) as pool: for r in pool.ordered_map(fn, chunks, *args): ...`` (``n == 1``: in this
    process)."""

    def __init__(self, workers: int, in_flight: int = 4) -> None:
        self.workers, self.in_flight = workers, in_flight
        self.pool = None

    def __enter__(self) -> WorkerPool:
        if self.workers > 1:
            methods = mp.get_all_start_methods()
            ctx = mp.get_context("fork" if "fork" in methods else "spawn")
            with signals.blocked():  # workers leave SIGINT / SIGTERM to this process (pipeline.signals)
                self.pool = ctx.Pool(self.workers, initializer=signals.worker_init, initargs=(os.getpid(),))
        return self

    def __exit__(self, exc_type, *_exc) -> None:
        if self.pool is not None:
            if exc_type is None:
                self.pool.close()
                self.pool.join()
            else:
                self.pool.terminate()
            self.pool = None

    def ordered_map(self, fn: Callable[..., T], chunks: Iterable[Any], *args: Any) -> Iterator[T]:
        """Yield ``fn(chunk, *args)`` for every chunk, in order; at most ``in_flight * workers`` queued."""
        if self.pool is None:
            for c in chunks:
                yield fn(c, *args)
            return
        pending: deque = deque()
        it = iter(chunks)
        exhausted = False
        while True:
            while not exhausted and len(pending) < self.in_flight * self.workers:
                try:
                    c = next(it)
                except StopIteration:
                    exhausted = True
                    break
                pending.append(self.pool.apply_async(fn, (c, *args)))
            if not pending:
                return
            yield pending.popleft().get()


def map_shards(fn: Callable[[Any], T], tasks: list[Any], workers: int, progress: bool, label: str) -> Iterator[T]:
    """``fn(task)`` of one task per shard, in order, over at most ``workers`` processes, with a progress bar."""
    with WorkerPool(min(resolve_workers(workers), max(1, len(tasks))), in_flight=2) as pool, \
            Progress(len(tasks), label, progress, unit="shards") as bar:
        for r in pool.ordered_map(fn, tasks):
            yield r
            bar.advance(1)
