"""The shard and stats stages (paper 3.1): image collections into WebDataset shards + RGB statistics."""

from pipeline.shards.config import ShardConfig, StatsConfig
from pipeline.shards.reader import iter_samples, read_manifest, shard_paths
from pipeline.shards.stats import run_stats
from pipeline.shards.writer import ShardResult, run_shard

__all__ = ["ShardConfig", "StatsConfig", "ShardResult", "run_shard", "run_stats", "read_manifest",
           "shard_paths", "iter_samples"]
