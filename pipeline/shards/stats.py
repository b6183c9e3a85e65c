"""Mean RGB and RGB covariance of the training images (paper 2.1 "subtracting the mean RGB value"; the colour shift
of 3.1 follows AlexNet's PCA of the RGB covariance) from exact integer moments: docs/shards.md "Statistics"."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pipeline.errors import UserError
from pipeline.reuse import Output, Recorded
from pipeline.shards.config import StatsConfig
from pipeline.shards.reader import decode_fields, shard_items
from pipeline.shards.tarstream import ShardError, read_shard

__all__ = ["STATS_FORMAT", "moments_of", "shard_moments", "shard_tasks", "stats_from_moments"]

STATS_FORMAT = "vgg-stats/1"


def moments_of(rgb: np.ndarray) -> np.ndarray:
    """Exact moments of one H x W x 3 uint8 image: ``[images, pixels, sum of x (3), sum of x x^T (9)]``, int64."""
    x = rgb.reshape(-1, 3).astype(np.float64)  # sums of integers < 2^53: exact in float64
    return np.concatenate([[1, len(x)], np.rint(x.sum(axis=0)), np.rint(x.T @ x).ravel()]).astype(np.int64)


def shard_moments(task: tuple[str, list[int] | None, int | None, int | None]) -> np.ndarray:
    """The moments of the images of one shard: ``(path, sample indices or None for all, count, bytes)``, the count
    and size being the manifest's (checked by the reader)."""
    path, pick, count, nbytes = task
    want = None if pick is None else set(pick)
    total = np.zeros(14, dtype=np.int64)
    for i, sample in enumerate(read_shard(path, count, nbytes)):
        if want is not None and i not in want:
            continue
        jpg = decode_fields(sample)["jpg"]  # a sample without one is a ShardError
        try:
            with Image.open(io.BytesIO(jpg)) as im:
                rgb = np.asarray(im.convert("RGB"))
        except Exception as e:  # noqa: BLE001 - any decoder failure is a damaged sample
            raise ShardError(f"{path}: sample {sample['__key__']!r}: image does not decode ({e})") from None
        total += moments_of(rgb)
    return total


def shard_tasks(cfg: StatsConfig, m: dict[str, Any]) -> tuple[list[tuple], bool]:
    """The :func:`shard_moments` tasks of ``cfg.split`` (a seeded subsample of ``cfg.images`` images, or all), and
    whether it is a subsample."""
    shards = m["splits"][cfg.split]["shards"]
    total = sum(s["count"] for s in shards)
    if total == 0:
        raise UserError(f"{cfg.shards}: split {cfg.split!r} has no images")
    picks: list[list[int] | None] = [None] * len(shards)
    sampled = cfg.images is not None and cfg.images < total
    if sampled:
        chosen = np.sort(np.random.default_rng(cfg.seed).choice(total, size=cfg.images, replace=False))
        offs = np.cumsum([0] + [s["count"] for s in shards])
        picks = [[int(i - offs[k]) for i in chosen if offs[k] <= i < offs[k + 1]] for k in range(len(shards))]
    items = shard_items(cfg.shards, cfg.split, m)
    tasks = [(it["url"], p, it["count"], it["bytes"]) for it, p in zip(items, picks, strict=True) if p is None or p]
    return tasks, sampled


def stats_from_moments(m: np.ndarray) -> dict[str, Any]:
    """Mean, population covariance and its eigen-decomposition (descending; eigenvectors as columns) of the
    moments ``m`` (:func:`moments_of`)."""
    n_img, n_px = int(m[0]), int(m[1])
    if n_px == 0:
        raise UserError("no pixels to compute statistics on")
    mean = m[2:5].astype(np.float64) / n_px
    cov = m[5:].reshape(3, 3).astype(np.float64) / n_px - np.outer(mean, mean)
    cov = (cov + cov.T) / 2
    val, vec = np.linalg.eigh(cov)
    order = np.argsort(val)[::-1]
    val, vec = val[order], vec[:, order]
    vec = vec * -np.sign(vec[np.abs(vec).argmax(axis=0), range(3)])  # each one's largest component < 0 (AlexNet)
    return {"mean": mean.tolist(), "cov": cov.tolist(), "eigval": val.tolist(), "eigvec": vec.tolist(),
            "images": n_img, "pixels": n_px}


class StatsRecord(Output):
    """The statistics a manifest holds (``manifest["stats"]``), replaced by every run with other inputs."""

    what = "statistics"

    def __init__(self, manifest: Path, stats: dict[str, Any] | None) -> None:
        super().__init__(manifest)
        self.stats = stats

    def read(self) -> Recorded | None:
        if self.stats is None:
            return None
        return Recorded(self.stats.get("identity"), True, "statistics recorded without identity", self.stats)
