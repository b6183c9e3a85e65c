"""``vgg extract``: multi-scale penultimate features into an HDF5 feature store (paper Appendix B)."""

from __future__ import annotations

import typer

from pipeline.cli.options import stage_command
from pipeline.features.config import ExtractConfig
from pipeline.results import ExtractResult
from pipeline.signals import stop_on_signals


@stage_command(ExtractConfig, arguments=["checkpoints"],
               aliases={"relative": "--relative/--absolute", "progress": "--progress/--quiet"})
def extract(cfg: ExtractConfig) -> ExtractResult:
    """Describe every image with the nets' penultimate features at several scales (Appendix B).

    Per image and scale Q: rescale the smallest side to Q, run the net densely, global-average-pool
    the FC7 map and average with the flipped image. Raw per-scale descriptors go to an HDF5 store
    (docs/features.md); aggregation, late fusion and L2 normalisation happen when it is read.
    Rerunning with the same inputs does nothing; an interrupted run resumes. Under torchrun each
    rank describes a part and rank 0 merges them.
    """
    from pipeline.features.run import run_extract

    with stop_on_signals():  # SIGTERM / SIGINT: stop at once; the store stays unfinished and resumes
        return run_extract(cfg)


def register(app: typer.Typer) -> None:
    app.command("extract")(extract)
