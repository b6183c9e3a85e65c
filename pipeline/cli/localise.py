"""``vgg localise train|evaluate``: the localisation stages of Appendix A (thin wrappers)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from pipeline.errors import UserError

localise_app = typer.Typer(help="Object localisation (paper Appendix A): box-regression nets, Tables 8-9.",
                           no_args_is_help=True)


def _ints(text: str | None, what: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(p) for p in re.split(r"[,\s]+", text.strip()) if p]
    except ValueError:
        raise UserError(f"{what}: expected integers like 256,384, got {text!r}") from None


@localise_app.command("train")
def train(
    config: Annotated[Optional[str], typer.Option("--config", "-c", help="YAML config file or preset name "
                                                                         "(e.g. localise-small)")] = None,
    sets: Annotated[Optional[list[str]], typer.Option("--set", help="override a config field: key=value")] = None,
    data: Annotated[Optional[str], typer.Option(help="training data with boxes (shards or VOC/ILSVRC source)")] = None,
    classifier: Annotated[Optional[Path], typer.Option(help="classification checkpoint to start from")] = None,
    head: Annotated[Optional[str], typer.Option(help="scr | pcr")] = None,
    fine_tune: Annotated[Optional[str], typer.Option("--fine-tune", help="all | fc")] = None,
    out: Annotated[Optional[Path], typer.Option(help="output folder")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Fine-tune a localisation net from a classification checkpoint (Euclidean loss, fixed scale S)."""
    from pipeline.config import load_config
    from pipeline.localise.train import LocaliseTrainConfig, run_localise_train

    cfg = load_config(LocaliseTrainConfig, config, sets, data=data, head=head, fine_tune=fine_tune,
                      classifier=str(classifier) if classifier else None, out=str(out) if out else None)
    result = run_localise_train(cfg)
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    b = result["best_epoch"] or {}
    err = b.get("val_crop_error")
    typer.echo(f"wrote {result['best']} ({result['head'].upper()}, fine-tuned {result['fine_tune']}, S={result['train_scale']}); "
               f"best epoch {b.get('epoch')}" + (f", val GT-class crop error {100 * err:.1f}%" if err is not None else ""))


@localise_app.command("evaluate")
def evaluate(
    checkpoints: Annotated[list[Path], typer.Argument(help="localisation checkpoint(s); several: boxes united "
                                                           "before merging")],
    classifier: Annotated[Optional[Path], typer.Option(help="classification checkpoint (dense protocol)")] = None,
    data: Annotated[Optional[str], typer.Option(help="data with boxes (shards or VOC/ILSVRC source)")] = None,
    split: Annotated[Optional[str], typer.Option(help="split to evaluate (default val)")] = None,
    protocol: Annotated[Optional[str], typer.Option(help="crop (Table 8) | dense (Table 9, default)")] = None,
    scales: Annotated[Optional[str], typer.Option(help="test scales Q, e.g. 256,384 (default: each net's S); "
                                                       "per net separated by ';', e.g. '256;352,384'")] = None,
    limit: Annotated[Optional[int], typer.Option(help="evaluate only the first N images")] = None,
    blacklist: Annotated[Optional[Path], typer.Option(help="devkit blacklist (one 1-based validation image index "
                                                          "per line): left out of the localisation error only")] = None,
    posteriors: Annotated[Optional[list[Path]], typer.Option(help="posteriors.npz of `vgg evaluate` giving the "
                                                                  "top-5 classes (repeat to fuse nets)")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto | cpu | cuda")] = None,
    out: Annotated[Optional[Path], typer.Option(help="output folder (loc_eval.json, loc_table.md, predictions.jsonl)")] = None,
    config: Annotated[Optional[str], typer.Option("--config", "-c", help="YAML config file or preset name")] = None,
    sets: Annotated[Optional[list[str]], typer.Option("--set", help="override a config field: key=value "
                                                                     "(e.g. merge.match=overfeat)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Localisation error of localisation nets: central crop with the GT class, or dense with merging."""
    from pipeline.config import load_config
    from pipeline.localise.evaluate import LocaliseEvalConfig, run_localise_evaluate

    overrides: dict[str, Any] = {
        "checkpoints": [str(p) for p in checkpoints], "classifier": str(classifier) if classifier else None,
        "data": data, "split": split, "protocol": protocol, "limit": limit,
        "blacklist": str(blacklist) if blacklist else None, "posteriors": [str(p) for p in posteriors or []] or None,
        "device": device, "out": str(out) if out else None,
    }
    if scales is not None and ";" in scales:
        overrides["net_scales"] = [_ints(part, "--scales") for part in scales.split(";")]
    elif scales is not None:
        overrides["scales"] = _ints(scales, "--scales")
    cfg = load_config(LocaliseEvalConfig, config, sets, **overrides)
    result = run_localise_evaluate(cfg)
    if as_json:
        typer.echo(result.model_dump_json(indent=2, exclude={"table"}))
        return
    typer.echo(result["table"])
    im = result["images"]
    line = f"{im['evaluated']} images evaluated, {im['skipped']} skipped"
    if result.get("classification_error") is not None:
        line += f"; top-{result['top_k']} classification error {100 * result['classification_error']:.1f}%"
    typer.echo(line)
    if result.outputs is not None:
        typer.echo(f"wrote {result.outputs.summary}")


def register(app: typer.Typer) -> None:
    app.add_typer(localise_app, name="localise")
