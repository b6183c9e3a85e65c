"""The shard, stats and verify stages top to bottom: images into WebDataset shards rescaled to S_max (paper 3.1),
the mean RGB (2.1) and the RGB eigen-decomposition of the colour shift (3.1) stored in the manifest, and the check
of a shard folder against its manifest (the hand-off to 3.1-3.2)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import UserError
from pipeline.images import ImageError, decode_rgb
from pipeline.io import atomic_write_json, sha256_file
from pipeline.locks import folder_lock
from pipeline.results import ShardResult, SplitCheck, StatsResult, VerifyResult
from pipeline.reuse import check_reusable, config_fields, identity
from pipeline.shards.config import ShardConfig, StatsConfig, VerifyConfig
from pipeline.shards.parts import merge_shard_parts, write_shard_part
from pipeline.shards.process import map_shards
from pipeline.shards.reader import MANIFEST, decode_fields, read_manifest, split_shards
from pipeline.shards.stats import STATS_FORMAT, StatsRecord, shard_moments, shard_tasks, stats_from_moments
from pipeline.shards.tarstream import ShardError, read_shard
from pipeline.shards.writer import ShardFolder, ShardJob, finish_folder, open_shard_job, write_splits

__all__ = ["run_shard", "run_stats", "run_verify", "check_shard"]


def run_shard(cfg: ShardConfig) -> ShardResult:
    """Write (resume, or reuse when up to date) the shards of ``cfg.source`` in ``cfg.out``; ``cfg.part`` ("i/n"):
    only part i of n, in ``out/.parts/i-of-n``; ``cfg.merge``: the finished parts become the shard folder
    (docs/shards.md). A folder of another source or config (unless ``cfg.overwrite``) is a UserError."""
    job = open_shard_job(cfg)  # the source's records, every split's seeded plan, the identity
    if cfg.part is not None:
        return write_shard_part(job)
    return merge_shard_parts(job) if cfg.merge else _write_folder(job)


def _write_folder(job: ShardJob) -> ShardResult:
    """The one-process run: reuse, resume or write the shard folder, holding its lock."""
    with folder_lock(job.out, f"shard folder {job.out}"):
        folder = ShardFolder(job.out)
        if check_reusable(folder, job.ident, job.cfg.overwrite) == "reuse":
            return job.result(job.out, folder.recorded.record)  # type: ignore[union-attr]
        folder.unmark()
        states, resumed = write_splits(job, job.out, job.ident, job.plans)
        manifest = finish_folder(job, states)
    return job.result(job.out, manifest, found=job.found, resumed=resumed)


def run_stats(cfg: StatsConfig) -> StatsResult:
    """The RGB statistics of ``cfg.split`` (mean, covariance, its eigen-decomposition), stored in
    ``manifest["stats"]``; no or damaged manifest, unknown or empty split, damaged shard: a UserError."""
    m = read_manifest(cfg.shards)
    split_shards(m, cfg.shards, cfg.split)  # an unknown split is refused
    manifest = Path(cfg.shards) / MANIFEST
    ident = identity(format=STATS_FORMAT, shards=m["fingerprint"], config=config_fields(cfg, "shards"))
    if check_reusable(StatsRecord(manifest, m.get("stats")), ident, overwrite=True) == "reuse":
        return StatsResult(**m["stats"], shards=str(cfg.shards), manifest=str(manifest))

    tasks, sampled = shard_tasks(cfg, m)  # one per shard: all its images, or the seeded subsample's
    moments = map_shards(shard_moments, tasks, cfg.workers, cfg.progress, f"stats {cfg.split}")
    stats = stats_from_moments(sum(moments, np.zeros(14, dtype=np.int64)))  # exact integer sums, in shard order
    stats.update({"split": cfg.split, "sampled": sampled, "seed": cfg.seed, "identity": ident})
    m["stats"] = stats
    atomic_write_json(manifest, m)
    return StatsResult(**stats, shards=str(cfg.shards), manifest=str(manifest))


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
    """Check every shard of ``cfg.shards`` (or of ``cfg.splits``) against the manifest: by default each listed
    shard's size and, walking its headers, sample count; ``cfg.hash``: also its sha256 and every image decoded.
    Any problem is a UserError naming the first damaged shard and the number of problems."""
    m = read_manifest(cfg.shards)
    splits = {name: SplitCheck() for name in cfg.splits or m["splits"]}
    entries = [(name, e) for name in splits for e in split_shards(m, cfg.shards, name)]
    base = Path(cfg.shards).resolve()
    tasks = [({"url": str(base / e["name"]), "count": e["count"], "bytes": e["bytes"]}, e.get("sha256"), cfg.hash)
             for _, e in entries]
    problems: list[str] = []
    checked = map_shards(check_shard, tasks, cfg.workers, cfg.progress, "verify")
    for (name, e), (n, problem) in zip(entries, checked, strict=True):
        sp = splits[name]
        sp.shards, sp.samples, sp.bytes = sp.shards + 1, sp.samples + n, sp.bytes + e["bytes"]
        if problem is not None:
            sp.bad_shards.append(e["name"])
            problems.append(problem)
    if problems:
        more = f" (and {len(problems) - 1} more damaged shards)" if len(problems) > 1 else ""
        raise UserError(f"verify: {problems[0]}{more}")
    return VerifyResult(shards=str(cfg.shards), hashed=cfg.hash, splits=splits, problems=problems)
