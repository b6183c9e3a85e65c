"""``vgg extract``: multi-scale penultimate features into an HDF5 feature store (paper Appendix B)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from pipeline.cli.options import JsonOption, stage_command
from pipeline.features.extract import ExtractConfig
from pipeline.signals import stop_on_signals

if TYPE_CHECKING:
    from pipeline.results import ExtractResult


@stage_command(ExtractConfig, arguments=["checkpoints"],
               aliases={"relative": "--relative/--absolute", "progress": "--progress/--quiet"})
def extract(cfg: ExtractConfig, as_json: JsonOption = False) -> None:
    """Describe every image with the nets' penultimate features at several scales (Appendix B).

    Per image and scale Q: rescale the smallest side to Q, run the net densely, global-average-pool
    the FC7 map and average with the flipped image. Raw per-scale descriptors go to an HDF5 store
    (docs/features.md); aggregation, late fusion and L2 normalisation happen when it is read.
    Rerunning with the same inputs does nothing; an interrupted run resumes. Under torchrun each
    rank describes a part and rank 0 merges them.
    """
    from pipeline.features.extract import run_extract

    with stop_on_signals():  # SIGTERM / SIGINT: stop at once; the store stays unfinished and resumes
        result = run_extract(cfg)
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    typer.echo(_summary(result))


def _summary(r: ExtractResult) -> str:
    if r.status == "exists":
        return (f"{r.path} already holds these features (same checkpoints, data, scales); nothing to do. "
                f"Read it with FeatureStore({r.path!r}) or `vgg inspect {r.path}`.")
    if r.status == "merged" and r.images is None:
        return f"merged {r['parts']} parts into {r.path}"
    rate = f", {r.images_per_s:.1f} images/s" if r.images_per_s else ""
    what = {"written": "wrote", "resumed": "resumed and finished", "part": "wrote part", "merged": "wrote"}[r.status]
    return (f"{what} {r.path}: {r.images} images, scales {r.scales}, D={r.dims}, "
            f"{r.described} described in this run, {r.failed} failed{rate}")


def register(app: typer.Typer) -> None:
    app.command("extract")(extract)
