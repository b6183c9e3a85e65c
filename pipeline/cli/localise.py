"""``vgg localise train|evaluate``: the localisation stages of Appendix A (thin wrappers)."""

from __future__ import annotations

import typer

from pipeline.cli.options import stage_command
from pipeline.localise.config import LocaliseEvalConfig, LocaliseTrainConfig
from pipeline.results import LocaliseEvalResult, LocaliseTrainResult
from pipeline.signals import stop_on_signals

localise_app = typer.Typer(help="Object localisation (paper Appendix A): box-regression nets, Tables 8-9.",
                           no_args_is_help=True)


@localise_app.command("train")
@stage_command(LocaliseTrainConfig)
def train(cfg: LocaliseTrainConfig) -> LocaliseTrainResult:
    """Fine-tune a localisation net from a classification checkpoint (Euclidean loss, fixed scale S).

    Presets: localise-small, localise-train-paper (--config).
    """
    from pipeline.localise.run import run_localise_train

    with stop_on_signals():
        return run_localise_train(cfg)


@localise_app.command("evaluate")
@stage_command(LocaliseEvalConfig, arguments=["checkpoints"])
def evaluate(cfg: LocaliseEvalConfig) -> LocaliseEvalResult:
    """Localisation error of localisation nets: central crop with the GT class, or dense with merging.

    --scales 256,384 gives every net these scales; '256;352,384' gives each net its own (net_scales).
    """
    from pipeline.localise.run import run_localise_evaluate

    return run_localise_evaluate(cfg)


def register(app: typer.Typer) -> None:
    app.add_typer(localise_app, name="localise")
