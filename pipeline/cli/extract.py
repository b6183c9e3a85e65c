"""``vgg extract``: multi-scale penultimate features into an HDF5 feature store (paper Appendix B)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.cli.options import JsonOption, stage_command
from pipeline.features.extract import ExtractConfig


@stage_command(ExtractConfig, arguments=["checkpoints"], aliases={"relative": "--relative/--absolute"})
def extract(
    cfg: ExtractConfig,
    progress: Annotated[bool, typer.Option("--progress/--quiet", help="progress bar (images/s) on a terminal")] = True,
    as_json: JsonOption = False,
) -> None:
    """Describe every image with the nets' penultimate features at several scales (Appendix B).

    Per image and scale Q: rescale the smallest side to Q, run the net densely, global-average-pool
    the FC7 map and average with the flipped image. Raw per-scale descriptors go to an HDF5 store
    (docs/features.md); aggregation, late fusion and L2 normalisation happen when it is read.
    Rerunning with the same inputs does nothing; an interrupted run resumes. Under torchrun each
    rank describes a part and rank 0 merges them.
    """
    from pipeline.features.extract import run_extract
    from pipeline.shards.progress import Progress

    bar: Progress | None = None
    seen = 0

    def report(done: int, total: int) -> None:  # images handled so far / in this process's share
        nonlocal bar, seen
        if bar is None:  # first call: what is left (a resumed run starts part-way)
            bar = Progress(total - done, f"extract {Path(cfg.out).name}", enabled=progress).__enter__()
            seen = done
        bar.advance(done - seen)
        seen = done

    try:
        result = run_extract(cfg, progress=report)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
        return
    typer.echo(_summary(result))


def _summary(r: dict[str, Any]) -> str:
    status = r["status"]
    if status == "exists":
        return (f"{r['path']} already holds these features (same checkpoints, data, scales); nothing to do. "
                f"Read it with FeatureStore({r['path']!r}) or `vgg inspect {r['path']}`.")
    if status == "merged" and "images" not in r:
        return f"merged {r['parts']} parts into {r['path']}"
    rate = f", {r['images_per_s']:.1f} images/s" if r.get("images_per_s") else ""
    what = {"written": "wrote", "resumed": "resumed and finished", "part": "wrote part", "merged": "wrote"}[status]
    return (f"{what} {r['path']}: {r['images']} images, scales {r['scales']}, D={r['dims']}, "
            f"{r.get('described', 0)} described in this run, {r.get('failed', 0)} failed{rate}")


def register(app: typer.Typer) -> None:
    app.command("extract")(extract)
