"""``run_verify``: check a shard folder against its manifest (the hand-off from sharding to paper 3.1-3.2).

The default check is cheap: every shard listed in ``manifest.json`` exists, has the recorded byte
size, and its headers (walked without reading the contents) are intact and hold the recorded
number of samples. ``hash=True`` is the full check: it also compares every shard's sha256 with
the manifest's, reads every member, and decodes every image. Both use the one shard reader
(:mod:`pipeline.shards.tarstream`). A summary table is printed (stderr); any problem fails the
stage with one line naming the first damaged shard and the number of problems.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from pipeline.errors import UserError
from pipeline.images import ImageError, decode_rgb
from pipeline.runtime import Progress
from pipeline.shards.config import VerifyConfig
from pipeline.shards.parallel import WorkerPool, resolve_workers
from pipeline.shards.reader import decode_fields, read_manifest
from pipeline.shards.tarstream import ShardError, read_shard

__all__ = ["VerifyConfig", "VerifyResult", "SplitCheck", "run_verify", "check_shard"]


class SplitCheck(BaseModel):
    """What was checked in one split."""

    shards: int = 0
    samples: int = 0
    bytes: int = 0
    bad_shards: list[str] = Field(default_factory=list)


class VerifyResult(BaseModel):
    """The outcome of ``run_verify``: per split counts and every problem found (one line each)."""

    shards: str
    hashed: bool
    splits: dict[str, SplitCheck]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def check_shard(task: tuple[dict[str, Any], str | None, bool]) -> tuple[int, str | None]:
    """(samples read, first problem or None) of one shard item; ``hash``: sha256 and image decoding too."""
    item, sha, full = task
    url, n = item["url"], 0
    try:
        if not os.path.isfile(url):
            return 0, f"{url}: shard listed in the manifest is missing"
        if full and sha is None:
            return 0, f"{url}: the manifest records no sha256"
        if full and (got := _sha256(url)) != sha:
            return 0, f"{url}: sha256 {got[:16]}..., the manifest says {sha[:16]}..."
        for sample in read_shard(url, item["count"], item["bytes"], data=full):
            n += 1
            if full:
                s = decode_fields(sample)
                try:
                    decode_rgb(s["jpg"])
                except ImageError as e:
                    return n, f"{url}: sample {s['__key__']!r}: image does not decode ({e})"
    except ShardError as e:
        return n, str(e)
    except OSError as e:
        return n, f"{url}: {e.strerror or e}"
    return n, None


def _summary(res: VerifyResult, log: bool) -> None:
    if not log:
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{res.shards}: {'sha256 + images' if res.hashed else 'sizes + counts'}")
    for col in ("split", "shards", "samples", "MB", "damaged"):
        t.add_column(col, justify="left" if col == "split" else "right")
    for name, sp in res.splits.items():
        t.add_row(name, str(sp.shards), str(sp.samples), f"{sp.bytes / 1e6:.1f}", str(len(sp.bad_shards)))
    Console(stderr=True, width=120).print(t)


def run_verify(cfg: VerifyConfig) -> VerifyResult:
    """Check every shard of ``cfg.shards`` (or of ``cfg.splits``) against the manifest.

    Args:
        cfg: the verify stage config.
    Returns:
        The :class:`VerifyResult` (only when nothing is wrong).
    Raises:
        UserError: no or damaged manifest, unknown split, or any problem in a shard (one line:
            the first problem and how many there are).
    """
    m = read_manifest(cfg.shards)
    names = cfg.splits or list(m["splits"])
    for name in names:
        if name not in m["splits"]:
            raise UserError(f"{cfg.shards}: no split {name!r} (has {', '.join(m['splits']) or 'none'})")
    base = Path(cfg.shards).resolve()
    tasks, where = [], []
    for name in names:
        for entry in m["splits"][name]["shards"]:
            item = {"url": str(base / entry["name"]), "count": entry["count"], "bytes": entry["bytes"]}
            tasks.append((item, entry.get("sha256"), cfg.hash))
            where.append(name)
    splits = {name: SplitCheck() for name in names}
    problems: list[str] = []
    workers = min(resolve_workers(cfg.workers), max(1, len(tasks)))
    with WorkerPool(workers, in_flight=2) as pool, Progress(len(tasks), "verify", cfg.progress, unit="shards") as bar:
        for (item, _, _), split, (n, problem) in zip(tasks, where, pool.ordered_map(check_shard, tasks), strict=False):
            sp = splits[split]
            sp.shards, sp.samples, sp.bytes = sp.shards + 1, sp.samples + n, sp.bytes + item["bytes"]
            if problem is not None:
                sp.bad_shards.append(Path(item["url"]).name)
                problems.append(problem)
            bar.advance(1)
    res = VerifyResult(shards=str(cfg.shards), hashed=cfg.hash, splits=splits, problems=problems)
    _summary(res, cfg.progress)
    if problems:
        more = f" (and {len(problems) - 1} more damaged shards)" if len(problems) > 1 else ""
        raise UserError(f"verify: {problems[0]}{more}")
    return res
