"""The paper's stages chained one way: the steps the demo (``vgg-paper``) and the reproduction are built from.

A pipeline calls a stage as ``call(fn, name)(config, **extra)`` (:data:`StageCall`): :func:`direct`
runs the stage function itself (``vgg reproduce`` on a terminal); in a flow,
:class:`pipeline.flows.routing.Router` runs it as a task of the flow, or as a flow run of the stage's
deployment on its work pool. Every stage reuses what a previous run finished, so a pipeline that
stopped is repaired by running it again. The steps below are the chains both pipelines share:
shards and their statistics (Sect. 3.1), feature stores (App. B), the raw-pixel baseline, and the
two transfer protocols of Table 11 (Caltech mean class recall over stacked scales, VOC-2007 mAP
over averaged scales).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipeline.results import ExtractResult, ShardResult, TransferResult

__all__ = ["StageCall", "direct", "shard_and_stats", "extract", "pixel_stores", "caltech", "voc07"]

#: how a pipeline calls a stage: ``call(fn, name)`` returns a callable taking the stage's config
StageCall = Callable[[Callable[..., Any], str], Callable[..., Any]]


def direct(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    """The stage function itself (no workflow)."""
    return fn


def shard_and_stats(call: StageCall, source: str | Path, out: str | Path) -> ShardResult:
    """Shard a source dataset and measure its training statistics (mean RGB, PCA of the colours: Sect. 3.1)."""
    from pipeline.shards import ShardConfig, StatsConfig, run_shard, run_stats

    shards = call(run_shard, "shard")(ShardConfig(source=str(source), out=str(out)))
    call(run_stats, "stats")(StatsConfig(shards=str(shards.out)))
    return shards


def extract(call: StageCall, name: str, out: str | Path, **fields: Any) -> ExtractResult:
    """A feature store of multi-scale penultimate descriptors (App. B), task ``extract-<name>``."""
    from pipeline.features import ExtractConfig, run_extract

    return call(run_extract, f"extract-{name}")(ExtractConfig(out=str(out), **fields))


def pixel_stores(call: StageCall, sources: dict[str, tuple[str, str | None]], folder: Path,
                 names: Callable[[str], str] = lambda key: key) -> dict[str, str]:
    """The shallow baseline: raw 32x32 pixels of each ``key: (source, split)`` in ``folder/pixels-<key>.h5``."""
    from pipeline.transfer.descriptors import write_pixel_store

    stores = {key: folder / f"pixels-{key}.h5" for key in sources}
    for key, (src, split) in sources.items():
        call(write_pixel_store, f"pixels-{names(key)}")(src, stores[key], split=split)
    return {key: str(path) for key, path in stores.items()}


def caltech(call: StageCall, name: str, stores: Sequence[str], out: str | Path, **fields: Any) -> TransferResult:
    """Caltech-101 protocol (mean class recall over random splits), descriptors of the scales stacked."""
    from pipeline.transfer import TransferConfig, run_transfer

    return call(run_transfer, name)(TransferConfig(stores=list(stores), protocol="caltech101", aggregate="stack",
                                                   out=str(out), **fields))


def voc07(call: StageCall, name: str, train: Sequence[str], test: Sequence[str], out: str | Path,
          **fields: Any) -> TransferResult:
    """VOC-2007 protocol (11-point mAP, trained on trainval, tested on test), descriptors of the scales averaged."""
    from pipeline.transfer import TransferConfig, run_transfer

    return call(run_transfer, name)(TransferConfig(stores=list(train), test_stores=list(test), protocol="voc07",
                                                   aggregate="avg", out=str(out), **fields))
