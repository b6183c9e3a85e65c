"""The shard, stats and verify stages (paper 3.1): image collections into WebDataset shards, RGB statistics, checks."""

from pipeline.shards.config import ShardConfig, StatsConfig, VerifyConfig
from pipeline.shards.reader import iter_samples, read_manifest, shard_paths
from pipeline.shards.run import run_shard, run_stats, run_verify

__all__ = ["ShardConfig", "StatsConfig", "VerifyConfig", "run_shard", "run_stats", "run_verify", "read_manifest",
           "shard_paths", "iter_samples"]
