"""The ``vgg`` command line: one sub-command per stage, each a thin wrapper over ``run_<stage>``.

Stage modules in this package register their commands with a ``register(app)`` function; every
module here is discovered, so adding a stage never edits this file. User errors
(:class:`pipeline.errors.UserError`, missing files) print one line and exit with status 2.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import typer

from pipeline.errors import UserError

__all__ = ["app", "main"]

app = typer.Typer(
    name="vgg",
    help=(
        "Very Deep Convolutional Networks (Simonyan & Zisserman, ICLR 2015) as a pipeline.\n\n"
        "Stages: shard -> stats -> train -> evaluate -> extract -> transfer, and localise "
        "(Appendix A). Each stage reads paths, writes one output folder and records its config."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",
)


#: --help lists the commands in pipeline order; modules not named here come after, by name.
ORDER = ["data", "shard", "train", "evaluate", "extract", "transfer", "localise", "flows", "bench", "models"]


def _register_all() -> None:
    rank = {name: i for i, name in enumerate(ORDER)}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: (rank.get(m.name, len(ORDER)), m.name)):
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


_register_all()


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``vgg`` console script."""
    try:
        app(args=argv, prog_name="vgg")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except FileNotFoundError as e:
        print(f"error: file not found: {e.filename or e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
