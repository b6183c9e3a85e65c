"""The shard and stats stages top to bottom: images into WebDataset shards rescaled to S_max (paper 3.1), the
mean RGB (2.1) and the RGB eigen-decomposition of the colour shift (3.1), stored in the manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.io import atomic_write_json
from pipeline.locks import folder_lock
from pipeline.results import ShardResult, StatsResult
from pipeline.reuse import check_reusable, config_fields, identity
from pipeline.shards.config import ShardConfig, StatsConfig
from pipeline.shards.manifest import MANIFEST
from pipeline.shards.parallel import map_shards
from pipeline.shards.parts import merge_shard_parts, write_shard_part
from pipeline.shards.reader import read_manifest, split_shards
from pipeline.shards.stats import STATS_FORMAT, StatsRecord, shard_moments, shard_tasks, stats_from_moments
from pipeline.shards.writer import ShardFolder, ShardJob, finish_folder, open_shard_job, write_splits

__all__ = ["run_shard", "run_stats"]


def run_shard(cfg: ShardConfig) -> ShardResult:
    """Write the shards of ``cfg.source`` into ``cfg.out`` (resuming, or doing nothing when they are up to date):
    the manifest (also in ``out/manifest.json``) and the counts. With ``cfg.part`` ("i/n") only part i of n is
    written (into ``out/.parts/i-of-n``; the result holds its record); with ``cfg.merge`` the finished parts
    become the shard folder.

    Raises:
        UserError: unknown source or split, an output folder holding another fingerprint (unless
            ``cfg.overwrite``), an output path that is a file, or another run writing the folder;
            for a merge, missing parts or parts of another source or config.
    """
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
    """Compute the RGB statistics of ``cfg.split`` (``mean``, ``cov``, ``eigval``, ``eigvec``, ``images``,
    ``pixels``, ``sampled``, ...) and store them in the manifest (``manifest["stats"]``).

    Raises:
        UserError: no or damaged manifest, an unknown or empty split, a damaged shard (one line).
    """
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
