"""Stage commands generated from the stages' pydantic configs: every option is declared once, as a field
(:func:`stage_command`; the rules: docs/design.md 4)."""

from __future__ import annotations

import inspect
import os
import typing
from collections.abc import Callable, Collection, Iterator
from typing import Annotated, Any, Literal

import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from pipeline.config import load_config, set_path, union_members

__all__ = ["stage_command", "config_fields", "ConfigOption", "SetOption", "JsonOption"]

ConfigOption = Annotated[str | None, typer.Option(
    "--config", "-c", help="YAML config file, or the name of a preset in pipeline/presets (the defaults shown are the "
                           "config model's; a preset's values replace them)", rich_help_panel="Config")]
SetOption = Annotated[list[str] | None, typer.Option(
    "--set", help="override any config field: key=value (YAML value; dotted keys for sections: data.shards=...); "
                  "repeatable", rich_help_panel="Config")]
JsonOption = Annotated[bool, typer.Option("--json", help="print the result as JSON")]

_SCALARS = (bool, int, float, str)


def _section(ann: Any) -> type[BaseModel] | None:
    """The model class of a nested section field (``Optional[Model]`` too), else None."""
    models = [m for m in union_members(ann) if isinstance(m, type) and issubclass(m, BaseModel)]
    return models[0] if len(models) == 1 and all(m in models or m is type(None) for m in union_members(ann)) else None


def config_fields(cls: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, FieldInfo]]:
    """Every leaf field of ``cls`` as (dotted path, field), sections expanded, in declaration order."""
    for name, field in cls.model_fields.items():
        sub = _section(field.annotation)
        if sub is not None:
            yield from config_fields(sub, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", field


def _kind(ann: Any) -> tuple[Any, str | None]:
    """(the option's Python type, a metavar) for a field annotation; (None, None): not an option."""
    members = [m for m in union_members(ann) if m is not type(None)]
    origins = {typing.get_origin(m) for m in members}
    if dict in origins or any(m is dict for m in members):
        return None, None
    lists = [m for m in members if typing.get_origin(m) is list]
    if lists and all(typing.get_args(m) in ((str,), ()) for m in lists):
        return list[str] | None, "LIST"  # names, paths: repeatable, each value may hold a comma-separated list
    if lists:
        return str | None, "LIST"  # numbers (scales, C values): one comma-separated value, the last one wins
    if len(members) == 1 and members[0] in _SCALARS:
        return members[0] | None, None
    if all(typing.get_origin(m) is Literal for m in members):
        words = [str(w) for m in members for w in typing.get_args(m)]
        return str | None, "|".join(words)
    return str | None, "TEXT"  # unions (list or word, bool or auto), tuples: parsed by the model


def _default_text(field: FieldInfo, decls: list[str]) -> str | None:
    default = field.get_default(call_default_factory=True)
    if isinstance(default, bool):  # the flag in effect by default
        on, _, off = decls[0].partition("/")
        return on if default or not off else off
    if default in (None, PydanticUndefined, [], {}) or isinstance(default, BaseModel):
        return None
    if isinstance(default, (list, tuple)):
        return ",".join(str(x) for x in default)
    return str(default)


def _option(path: str, field: FieldInfo, alias: str | None) -> tuple[Any, list[str]] | None:
    """The annotated parameter type of one field's option and its declarations; None: no option."""
    py, metavar = _kind(field.annotation)
    if py is None:
        return None
    flag = path.replace("_", "-")
    decls = [f"--{flag}/--no-{flag}"] if py == bool | None else [f"--{flag}"]
    if alias:
        decls = [alias] if "/" in alias else decls + [alias]
    section = path.rsplit(".", 1)[0] if "." in path else None
    info = typer.Option(*decls, help=(field.description or "").replace("\n", " "),
                        show_default=_default_text(field, decls) or False, metavar=metavar,
                        rich_help_panel=f"{section} section" if section else None)
    return Annotated[py, info], decls


def _argument(field: FieldInfo) -> Any:
    help_ = (field.description or "").replace("\n", " ")
    if list in {typing.get_origin(m) for m in union_members(field.annotation)}:
        return Annotated[list[str] | None, typer.Argument(help=help_, show_default=False)], None
    if field.is_required():
        return Annotated[str, typer.Argument(help=help_, show_default=False)], inspect.Parameter.empty
    return Annotated[str | None, typer.Argument(help=help_, show_default=False)], None


#: Short names every stage with a ``runtime`` section also takes (``--device cpu`` = ``--runtime.device cpu``).
RUNTIME_ALIASES = {"runtime.device": "--device", "runtime.threads": "--threads"}


def stage_command(cls: type[BaseModel], *, arguments: Collection[str] = (), aliases: dict[str, str] | None = None,
                  skip: Collection[str] = (), presets: bool = True
                  ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: a command whose options are ``cls``'s fields, calling ``body(cfg, **extras)``.

    ``arguments``: fields that are positional arguments, in order; ``aliases``: field path -> another
    option name (``"--split"``) or bool flags (``"--relative/--absolute"``); ``skip``: fields without an
    option (``--set`` still reaches them); ``presets``: add ``--config`` and ``--set``. The body's own
    parameters after ``cfg`` (typer-annotated) are added as they are. A body that returns a
    :class:`~pipeline.results.StageResult` gets ``--json``: the command prints the result's ``summary()``,
    or with ``--json`` the result itself (under torchrun, process 0 prints).
    """
    aliases = {**RUNTIME_ALIASES, **(aliases or {})}

    def wrap(body: Callable[..., Any]) -> Callable[..., Any]:
        params: list[inspect.Parameter] = []
        fields: dict[str, tuple[str, str]] = {}  # parameter name -> (field path, option label)
        for name in arguments:
            ann, default = _argument(cls.model_fields[name])
            params.append(inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default,
                                            annotation=ann))
            fields[name] = (name, name.upper())
        for path, field in config_fields(cls):
            made = None if path in arguments or path in skip else _option(path, field, aliases.get(path))
            if made is not None:
                pname = path.replace(".", "__")
                params.append(inspect.Parameter(pname, inspect.Parameter.KEYWORD_ONLY, default=None,
                                                annotation=made[0]))
                fields[pname] = (path, made[1][0].split("/")[0])
        if presets:
            params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ann)
                       for name, ann in (("config", ConfigOption), ("sets", SetOption))]
        hints = typing.get_type_hints(body, include_extras=True)
        extras = [p.replace(annotation=hints[p.name], kind=inspect.Parameter.KEYWORD_ONLY)
                  for p in list(inspect.signature(body).parameters.values())[1:]]
        printed = "as_json" not in hints and hints.get("return") not in (None, type(None))
        if printed:
            params.append(inspect.Parameter("as_json", inspect.Parameter.KEYWORD_ONLY, default=False,
                                            annotation=JsonOption))

        def command(**kwargs: Any) -> Any:
            overrides: dict[str, Any] = {}
            labels: dict[str, str] = {}
            for pname, (path, label) in fields.items():
                value = kwargs.get(pname)
                if value is None or value == []:
                    continue
                if isinstance(value, list) and pname not in arguments and len(value) == 1:
                    value = value[0]  # one occurrence: text the model parses (comma-separated lists)
                set_path(overrides, path, value)
                labels[path] = label
            cfg = load_config(cls, kwargs.get("config"), kwargs.get("sets"), labels=labels, values=overrides)
            result = body(cfg, **{p.name: kwargs[p.name] for p in extras})
            if printed and os.environ.get("RANK", "0") == "0":
                typer.echo(result.model_dump_json(indent=2) if kwargs["as_json"] else result.summary())

        command.__signature__ = inspect.Signature(params + extras)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params + extras}
        command.__doc__ = body.__doc__
        command.__name__ = body.__name__
        return command

    return wrap
