"""Progress reporting for long stages: a rich bar with images/s on a terminal, log lines otherwise."""

from __future__ import annotations

import sys
import time

__all__ = ["Progress", "log"]


def log(msg: str, enabled: bool = True) -> None:
    """One line to stderr (the stages' plain log)."""
    if enabled:
        print(msg, file=sys.stderr, flush=True)


class Progress:
    """``with Progress(total, "train") as p: p.advance(n)``; silent when not ``enabled``."""

    def __init__(self, total: int, desc: str, enabled: bool = True, every_s: float = 10.0,
                 unit: str = "images") -> None:
        self.total, self.desc, self.enabled, self.every_s, self.unit = total, desc, enabled, every_s, unit
        self.done = 0
        self._bar = None
        self._task = None
        self._t0 = self._last = time.monotonic()

    def __enter__(self) -> Progress:
        if self.enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as Bar

            self._bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
                            console=Console(stderr=True), transient=False)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.desc, total=self.total, rate="")
        return self

    def rate(self) -> float:
        """Items per second so far."""
        return self.done / max(time.monotonic() - self._t0, 1e-9)

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more items done."""
        self.done += n
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(self._task, advance=n, rate=f"{self.rate():.1f} {self.unit}/s")
            return
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            log(f"{self.desc}: {self.done}/{self.total} {self.unit}, {self.rate():.1f} {self.unit}/s")

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
        elif self.enabled and exc[0] is None:
            log(f"{self.desc}: {self.done}/{self.total} {self.unit}, {self.rate():.1f} {self.unit}/s")

