"""Prefect entrypoints of the seven stage deployments (``prefect.yaml``): shard, stats, train, evaluate,
extract, transfer, localise (paper Sections 3-4, Appendices A-B).

Only imports: the flows live in :mod:`pipeline.flows.stages`, inside the installed package, so the CLI,
``vgg serve`` and the tests use the same objects and the project installs no generic ``flows`` package.
"""

from pipeline.flows.stages import (
    evaluate_flow,
    extract_flow,
    localise_flow,
    shard_flow,
    stats_flow,
    train_flow,
    transfer_flow,
)

__all__ = ["shard_flow", "stats_flow", "train_flow", "evaluate_flow", "extract_flow", "transfer_flow",
           "localise_flow"]
