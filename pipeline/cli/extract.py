"""``vgg extract``: multi-scale penultimate features into an HDF5 feature store (paper Appendix B)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from pipeline.errors import UserError

if TYPE_CHECKING:
    from pipeline.results import ExtractResult


def parse_scales(text: str | None) -> list[int] | str | None:
    """``"256,384,512"`` -> ints; ``paper`` / ``voc`` kept as preset names."""
    if text is None:
        return None
    t = text.strip().lower()
    if t in ("paper", "voc"):
        return t
    try:
        return [int(p) for p in re.split(r"[,\s]+", t) if p]
    except ValueError:
        raise UserError(f"--scales: expected integers like 256,384,512, or paper / voc, got {text!r}") from None


def extract(
    checkpoints: Annotated[Optional[list[Path]], typer.Argument(
        help="checkpoint, or two checkpoints whose descriptors are stacked (late fusion)")] = None,
    data: Annotated[Optional[str], typer.Option(help="shard folder or source dataset (ImageFolder, VOC, Caltech, ...)")] = None,
    out: Annotated[Optional[Path], typer.Option(help="feature store to write (default features.h5)")] = None,
    split: Annotated[Optional[str], typer.Option(help="split to describe (default: the only one, else val, else test)")] = None,
    format: Annotated[Optional[str], typer.Option(help="source layout (default auto)")] = None,
    scales: Annotated[Optional[str], typer.Option(
        help="test scales Q: e.g. 256,384,512; or paper (256,384,512) / voc (256..768)")] = None,
    relative: Annotated[Optional[bool], typer.Option(
        "--relative/--absolute", help="multiply the scales by crop/256 (crop-32 nets: paper -> 32,48,64)")] = None,
    aggregate: Annotated[Optional[str], typer.Option(help="readers' default: avg or stack over scales")] = None,
    l2: Annotated[Optional[str], typer.Option(help="readers' default L2 placement: aggregate (paper), net, scale, both, none")] = None,
    boxes: Annotated[Optional[bool], typer.Option("--boxes/--no-boxes", help="also describe box crops (Table 12)")] = None,
    flip: Annotated[Optional[bool], typer.Option("--flip/--no-flip", help="average with the flipped image")] = None,
    dtype: Annotated[Optional[str], typer.Option(help="float32 or float16 storage")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="images per batch")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto | cpu | cuda")] = None,
    bf16: Annotated[Optional[bool], typer.Option("--bf16/--fp32", help="bf16 autocast")] = None,
    channels_last: Annotated[Optional[bool], typer.Option("--channels-last/--no-channels-last", help="NHWC format")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace a store built from other inputs")] = False,
    part: Annotated[Optional[str], typer.Option(help="i/n: describe only part i of n (fan-out without torchrun)")] = None,
    merge: Annotated[bool, typer.Option(help="combine the finished parts of --out")] = False,
    config: Annotated[Optional[str], typer.Option("--config", "-c", help="YAML config file or preset name")] = None,
    sets: Annotated[Optional[list[str]], typer.Option("--set", help="override a config field: key=value")] = None,
    progress: Annotated[bool, typer.Option("--progress/--quiet", help="progress bar (images/s) on a terminal")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Describe every image with the nets' penultimate features at several scales (Appendix B).

    Per image and scale Q: rescale the smallest side to Q, run the net densely, global-average-pool
    the FC7 map and average with the flipped image. Raw per-scale descriptors go to an HDF5 store
    (docs/features.md); aggregation, late fusion and L2 normalisation happen when it is read.
    Rerunning with the same inputs does nothing; an interrupted run resumes. Under torchrun each
    rank describes a part and rank 0 merges them.
    """
    from pipeline.config import load_config
    from pipeline.features.extract import ExtractConfig, run_extract

    overrides: dict[str, Any] = {
        "checkpoints": [str(p) for p in checkpoints] if checkpoints else None, "data": data,
        "out": str(out) if out else None, "split": split, "format": format, "scales": parse_scales(scales),
        "relative": relative, "aggregate": aggregate, "l2": l2, "boxes": boxes, "flip": flip, "dtype": dtype,
        "batch_size": batch_size, "device": device, "bf16": bf16, "channels_last": channels_last, "progress": progress, "overwrite": overwrite or None, "part": part, "merge": merge or None,
    }
    cfg = load_config(ExtractConfig, config, sets, **overrides)
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
