"""``vgg localise train|evaluate``: the localisation stages of Appendix A (thin wrappers)."""

from __future__ import annotations

import typer

from pipeline.cli.options import JsonOption, stage_command
from pipeline.localise.evaluate import LocaliseEvalConfig
from pipeline.localise.train import LocaliseTrainConfig
from pipeline.signals import stop_on_signals

localise_app = typer.Typer(help="Object localisation (paper Appendix A): box-regression nets, Tables 8-9.",
                           no_args_is_help=True)


@localise_app.command("train")
@stage_command(LocaliseTrainConfig)
def train(cfg: LocaliseTrainConfig, as_json: JsonOption = False) -> None:
    """Fine-tune a localisation net from a classification checkpoint (Euclidean loss, fixed scale S).

    Presets: localise-small, localise-train-paper (--config).
    """
    from pipeline.localise.train import run_localise_train

    with stop_on_signals():
        result = run_localise_train(cfg)
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    b = result["best_epoch"] or {}
    err = b.get("val_crop_error")
    typer.echo(f"wrote {result['best']} ({result['head'].upper()}, fine-tuned {result['fine_tune']}, "
               f"S={result['train_scale']}); best epoch {b.get('epoch')}"
               + (f", val GT-class crop error {100 * err:.1f}%" if err is not None else ""))


@localise_app.command("evaluate")
@stage_command(LocaliseEvalConfig, arguments=["checkpoints"])
def evaluate(cfg: LocaliseEvalConfig, as_json: JsonOption = False) -> None:
    """Localisation error of localisation nets: central crop with the GT class, or dense with merging.

    --scales 256,384 gives every net these scales; '256;352,384' gives each net its own (net_scales).
    """
    from pipeline.localise.evaluate import run_localise_evaluate

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
