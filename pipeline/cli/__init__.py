"""The ``vgg`` command line: one sub-command per stage, each a thin wrapper over ``run_<stage>``, registered by
the ``register(app)`` of every module here (discovered); :func:`main` is the one error boundary (docs/design.md 1;
a stage stopped by SIGTERM / SIGINT: docs/scaleout.md)."""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
import traceback

import typer

from pipeline.errors import is_expected, one_line
from pipeline.signals import Stopped

__all__ = ["app", "main"]

app = typer.Typer(name="vgg", no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
                  rich_markup_mode="markdown", help=(
    "Very Deep Convolutional Networks (Simonyan & Zisserman, ICLR 2015) as a pipeline.\n\n"
    "Stages: shard -> stats -> train -> evaluate -> extract -> transfer, and localise "
    "(Appendix A). Each stage reads paths, writes one output folder and records its config.\n\n"
    "Failures print one line `error: ...` (exit 2); add `--debug` anywhere (or set VGG_DEBUG=1) to see the "
    "traceback of an internal error (exit 1). SIGTERM / Ctrl-C stop train, shard and extract at a safe point "
    "(one line, exit 143 / 130); rerun to resume."))


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
    """Entry point of the ``vgg`` console script: runs the command and exits with its status."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args[: args.index("--") if "--" in args else len(args)]
    if debug:
        args.remove("--debug")
    debug = debug or os.environ.get("VGG_DEBUG", "") not in ("", "0")
    try:
        rc = app(args=args, prog_name="vgg", standalone_mode=False)
    except Stopped as e:  # SIGTERM / SIGINT: the stage saved what a rerun resumes from
        if os.environ.get("RANK", "0") in ("", "0"):
            print(e, file=sys.stderr, flush=True)
        sys.exit(e.exit_code)
    except typer.Exit as e:  # typer.Exit inside a command; Ctrl-C (130)
        rc = e.exit_code
        if rc == 130:
            print("interrupted", file=sys.stderr)
    except typer.TyperException as e:  # usage errors: unknown option, missing argument, bad value
        if type(e).__name__ != "NoArgsIsHelpError":  # (that one has printed the help)
            ctx = getattr(e, "ctx", None)
            where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            print(f"error: {' '.join(e.format_message().split())}{where}", file=sys.stderr)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt) as e:  # typer turns an EOFError raised by a command into Abort
        if isinstance(e, typer.Abort) and isinstance(e.__cause__, EOFError):
            sys.exit(_report(e.__cause__, debug))
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - the error boundary
        sys.exit(_report(e, debug))
    sys.exit(rc if isinstance(rc, int) else 0)


def _report(exc: BaseException, debug: bool) -> int:
    """Print ``exc`` as the boundary does; the exit status (2 expected, 1 bug)."""
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    expected = is_expected(exc)
    if expected:
        print(f"error: {one_line(exc, getattr(exc, 'labels', None))}", file=sys.stderr)
    else:
        print(f"internal error: {one_line(exc)}" + ("" if debug else " (run again with --debug for the traceback)"),
              file=sys.stderr)
    return 2 if expected else 1
