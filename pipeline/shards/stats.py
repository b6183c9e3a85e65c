"""``run_stats``: mean RGB and RGB covariance of the training images (paper 2.1, AlexNet PCA).

The paper's only preprocessing is "subtracting the mean RGB value, computed on the training set"
(2.1); the training stage's colour shift (3.1, following AlexNet) needs the eigenvalues and
eigenvectors of the 3x3 RGB covariance. Both are computed here on the 0-255 scale by streaming
over the stored training images, with exact integer sums of x and x x^T (so the result does not
depend on the order or on the number of workers), over all pixels or a seeded subsample of
images, and stored in ``manifest["stats"]`` with their identity (the shards' fingerprint, split,
subsample and seed): a re-run with the same identity returns them (:mod:`pipeline.reuse`). Shards
are read with the checked reader (:func:`pipeline.shards.tarstream.read_shard`), so a damaged
shard fails the stage with one line.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pipeline.errors import UserError
from pipeline.io import atomic_write_json
from pipeline.results import StatsResult
from pipeline.reuse import Output, Recorded, check_reusable, config_fields, identity
from pipeline.runtime import Progress, log
from pipeline.shards.config import StatsConfig
from pipeline.shards.manifest import MANIFEST
from pipeline.shards.parallel import WorkerPool, resolve_workers
from pipeline.shards.reader import read_manifest, shard_items
from pipeline.shards.tarstream import ShardError, read_shard

__all__ = ["run_stats", "moments_of", "stats_from_moments", "shard_moments"]

#: the version of ``manifest["stats"]`` (its identity's format)
STATS_FORMAT = "vgg-stats/1"


def moments_of(rgb: np.ndarray) -> tuple[int, list[int], list[list[int]]]:
    """Exact (pixel count, sum of x, sum of x x^T) of an H x W x 3 uint8 image."""
    x = rgb.reshape(-1, 3).astype(np.float64)
    s1 = x.sum(axis=0)  # integers < 2^53: exact in float64
    s2 = x.T @ x
    return x.shape[0], [int(v) for v in np.rint(s1)], [[int(v) for v in row] for row in np.rint(s2)]


def shard_moments(path: str, pick: list[int] | None, count: int | None = None,
                  nbytes: int | None = None) -> tuple[int, int, list[int], list[list[int]]]:
    """(images, pixels, sum x, sum x x^T) over the images of one shard (``pick``: sample indices).

    ``count`` and ``nbytes`` are the manifest's values for the shard, checked by the reader.
    """
    want = None if pick is None else set(pick)
    n_img, n_px = 0, 0
    s1 = [0, 0, 0]
    s2 = [[0] * 3 for _ in range(3)]
    for i, sample in enumerate(read_shard(path, count, nbytes)):
        if want is not None and i not in want:
            continue
        if sample.get("jpg") is None:
            raise ShardError(f"{path}: sample {sample['__key__']!r} has no .jpg file")
        try:
            with Image.open(io.BytesIO(sample["jpg"])) as im:
                rgb = np.asarray(im.convert("RGB"))
        except Exception as e:  # noqa: BLE001 - any decoder failure is a damaged sample
            raise ShardError(f"{path}: sample {sample['__key__']!r}: image does not decode ({e})") from None
        n, a, b = moments_of(rgb)
        n_img += 1
        n_px += n
        s1 = [u + v for u, v in zip(s1, a, strict=False)]
        s2 = [[u + v for u, v in zip(r1, r2, strict=False)] for r1, r2 in zip(s2, b, strict=False)]
    return n_img, n_px, s1, s2


def _one(task: tuple[str, list[int] | None, int, int]) -> tuple[int, int, list[int], list[list[int]]]:
    return shard_moments(*task)


def stats_from_moments(n_img: int, n_px: int, s1: list[int], s2: list[list[int]]) -> dict[str, Any]:
    """Mean, population covariance and its eigen-decomposition (descending; eigenvectors as columns)."""
    if n_px == 0:
        raise UserError("no pixels to compute statistics on")
    mean = np.array(s1, dtype=np.float64) / n_px
    cov = np.array(s2, dtype=np.float64) / n_px - np.outer(mean, mean)
    cov = (cov + cov.T) / 2
    val, vec = np.linalg.eigh(cov)
    order = np.argsort(val)[::-1]
    val, vec = val[order], vec[:, order]
    # sign convention: the largest-magnitude component of each eigenvector is negative (as AlexNet's)
    for j in range(3):
        if vec[np.argmax(np.abs(vec[:, j])), j] > 0:
            vec[:, j] = -vec[:, j]
    return {"mean": mean.tolist(), "cov": cov.tolist(), "eigval": val.tolist(), "eigvec": vec.tolist(),
            "images": int(n_img), "pixels": int(n_px)}


def run_stats(cfg: StatsConfig) -> StatsResult:
    """Compute the RGB statistics of ``cfg.split`` and store them in the manifest.

    Args:
        cfg: the stats stage config.
    Returns:
        The ``stats`` written to ``manifest["stats"]`` (``mean``, ``cov``, ``eigval``, ``eigvec``,
        ``images``, ``pixels``, ``split``, ``sampled``, ``seed``) and the ``shards`` and ``manifest`` paths.
    """
    m = read_manifest(cfg.shards)
    if cfg.split not in m["splits"]:
        raise UserError(f"{cfg.shards}: no split {cfg.split!r} (has {', '.join(m['splits'])})")
    base = Path(cfg.shards)
    ident = identity(format=STATS_FORMAT, shards=m["fingerprint"], config=config_fields(cfg, "shards"))
    old = m.get("stats")
    if check_reusable(_Stats(base / MANIFEST, old), ident, overwrite=True) == "reuse":
        return StatsResult(**old, shards=str(cfg.shards), manifest=str(base / MANIFEST))
    shards = m["splits"][cfg.split]["shards"]
    total = sum(s["count"] for s in shards)
    if total == 0:
        raise UserError(f"{cfg.shards}: split {cfg.split!r} has no images")
    picks: list[list[int] | None] = [None] * len(shards)
    if cfg.images is not None and cfg.images < total:
        chosen = np.sort(np.random.default_rng(cfg.seed).choice(total, size=cfg.images, replace=False))
        offs = np.cumsum([0] + [s["count"] for s in shards])
        picks = [[int(i - offs[k]) for i in chosen if offs[k] <= i < offs[k + 1]] for k in range(len(shards))]
    items = shard_items(base, cfg.split, m)
    tasks = [(it["url"], p, it["count"], it["bytes"]) for it, p in zip(items, picks, strict=False) if p is None or p]
    n_img, n_px = 0, 0
    s1 = [0, 0, 0]
    s2 = [[0] * 3 for _ in range(3)]
    workers = min(resolve_workers(cfg.workers), max(1, len(tasks)))
    bar = Progress(len(tasks), f"stats {cfg.split}", cfg.progress, unit="shards")
    with WorkerPool(workers, in_flight=2) as pool, bar:
        for a, b, c, d in pool.ordered_map(_one, tasks):
            n_img, n_px = n_img + a, n_px + b
            s1 = [u + v for u, v in zip(s1, c, strict=False)]
            s2 = [[u + v for u, v in zip(r1, r2, strict=False)] for r1, r2 in zip(s2, d, strict=False)]
            bar.advance(1)
    stats = stats_from_moments(n_img, n_px, s1, s2)
    stats.update({"split": cfg.split, "sampled": cfg.images is not None and cfg.images < total, "seed": cfg.seed,
                  "identity": ident})
    m["stats"] = stats
    atomic_write_json(base / MANIFEST, m)
    log(f"{cfg.shards}: mean RGB {[round(v, 3) for v in stats['mean']]}, "
        f"eigval {[round(v, 3) for v in stats['eigval']]} "
        f"over {n_img} images ({n_px} pixels)", cfg.progress)
    return StatsResult(**stats, shards=str(cfg.shards), manifest=str(base / MANIFEST))


class _Stats(Output):
    """The statistics a manifest holds (``manifest["stats"]``), replaced by every run with other inputs."""

    what = "statistics"

    def __init__(self, manifest: Path, stats: dict[str, Any] | None) -> None:
        super().__init__(manifest)
        self.stats = stats

    def read(self) -> Recorded | None:
        if self.stats is None:
            return None
        return Recorded(self.stats.get("identity"), True, "statistics recorded without identity", self.stats)
