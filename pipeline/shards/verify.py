"""``run_verify``: check a shard folder against its manifest (the hand-off from sharding to paper 3.1-3.2).

By default every listed shard exists with its byte size and its headers (walked without the contents) hold
the recorded sample count; ``hash``: also every shard's sha256 and every image decoded. Any problem fails
the stage with one line naming the first damaged shard and the number of problems.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.images import ImageError, decode_rgb
from pipeline.io import sha256_file
from pipeline.results import SplitCheck, VerifyResult
from pipeline.shards.config import VerifyConfig
from pipeline.shards.parallel import map_shards
from pipeline.shards.reader import decode_fields, read_manifest, split_shards
from pipeline.shards.tarstream import ShardError, read_shard

__all__ = ["run_verify", "check_shard"]


def check_shard(task: tuple[dict[str, Any], str | None, bool]) -> tuple[int, str | None]:
    """(samples read, first problem or None) of one shard item; ``hash``: sha256 and image decoding too."""
    item, sha, full = task
    url, n = item["url"], 0
    try:
        if not os.path.isfile(url):
            return 0, f"{url}: shard listed in the manifest is missing"
        if full and sha is None:
            return 0, f"{url}: the manifest records no sha256"
        if full and (got := sha256_file(url)) != sha:
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


def run_verify(cfg: VerifyConfig) -> VerifyResult:
    """Check every shard of ``cfg.shards`` (or of ``cfg.splits``) against the manifest: the :class:`VerifyResult`
    when nothing is wrong.

    Raises:
        UserError: no or damaged manifest, unknown split, or any problem in a shard (one line:
            the first problem and how many there are).
    """
    m = read_manifest(cfg.shards)
    names = cfg.splits or list(m["splits"])
    shards = {name: split_shards(m, cfg.shards, name) for name in names}
    base = Path(cfg.shards).resolve()
    tasks = [({"url": str(base / e["name"]), "count": e["count"], "bytes": e["bytes"]}, e.get("sha256"), cfg.hash)
             for name in names for e in shards[name]]
    where = [name for name in names for _ in shards[name]]
    splits = {name: SplitCheck() for name in names}
    problems: list[str] = []
    checked = map_shards(check_shard, tasks, cfg.workers, cfg.progress, "verify")
    for (item, _, _), split, (n, problem) in zip(tasks, where, checked, strict=False):
        sp = splits[split]
        sp.shards, sp.samples, sp.bytes = sp.shards + 1, sp.samples + n, sp.bytes + item["bytes"]
        if problem is not None:
            sp.bad_shards.append(Path(item["url"]).name)
            problems.append(problem)
    res = VerifyResult(shards=str(cfg.shards), hashed=cfg.hash, splits=splits, problems=problems)
    if problems:
        more = f" (and {len(problems) - 1} more damaged shards)" if len(problems) > 1 else ""
        raise UserError(f"verify: {problems[0]}{more}")
    return res
