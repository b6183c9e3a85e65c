"""Stage configuration: one pydantic model per stage, loaded from YAML presets, then ``--set``, then options
(docs/design.md 4); text given for a list field is split by the model (``--scales 256,384`` = a YAML list)."""

from __future__ import annotations

import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

from pipeline.errors import UserError, validation_summary
from pipeline.io import atomic_write_text

__all__ = ["ConfigSection", "StageConfig", "load_config", "save_config", "parse_sets", "config_from", "split_text",
           "read_preset", "union_members", "set_path"]

C = TypeVar("C", bound=BaseModel)

_NUMBER_NAMES = {int: "integers like 256,384,512", float: "numbers like 0.1,1,10"}


def union_members(ann: Any) -> list[Any]:
    """The members of a Union / Optional annotation (the annotation itself otherwise)."""
    if typing.get_origin(ann) in (Union, types.UnionType):
        return [a for alt in typing.get_args(ann) for a in union_members(alt)]
    return [ann]


def split_text(value: str, ann: Any) -> Any:
    """Parse text given for a field of type ``ann``: comma-separated lists (``;`` between the lists of a list
    of lists), numbers checked (ValueError); a word that is one of the field's literal choices stays."""
    alts = union_members(ann)
    words = [w for a in alts if typing.get_origin(a) is Literal for w in typing.get_args(a)]
    seqs = [a for a in alts if typing.get_origin(a) in (list, tuple, set, frozenset)]
    if not seqs or value.strip() in words or str in alts:
        return value
    seq = seqs[0]
    item = typing.get_args(seq)[0] if typing.get_args(seq) else str
    if typing.get_origin(item) in (list, tuple):
        return [split_text(part, item) for part in value.split(";")]
    parts = [p.strip() for p in re.split(r"[,\s]+" if item in _NUMBER_NAMES else ",", value.strip()) if p.strip()]
    if item in _NUMBER_NAMES:
        try:
            float_parts = [float(p) for p in parts]
        except ValueError:
            choices = f", or {' / '.join(map(str, words))}" if words else ""
            raise ValueError(f"expected {_NUMBER_NAMES[item]}{choices}, got {value!r}") from None
        if item is int and not all(f.is_integer() for f in float_parts):
            raise ValueError(f"expected {_NUMBER_NAMES[int]}, got {value!r}")
        return [int(f) for f in float_parts] if item is int else float_parts
    return parts


class ConfigSection(BaseModel):
    """Base of every config model and section: unknown keys are errors, values validated on
    assignment, and text given for a list field is split (see :func:`split_text`)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    @field_validator("*", mode="before")
    @classmethod
    def _split_text(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str) and info.field_name in cls.model_fields:
            return split_text(value, cls.model_fields[info.field_name].annotation)
        return value


class StageConfig(ConfigSection):
    """Base of all stage configs (one per stage)."""


def set_path(d: dict[str, Any], dotted: str, value: Any) -> None:
    """``d[a][b][c] = value`` for the dotted key ``a.b.c`` (sections made as needed)."""
    keys = dotted.split(".")
    for k in keys[:-1]:
        d = d.setdefault(k, {})
        if not isinstance(d, dict):
            raise UserError(f"--set {dotted}: {k} is not a section")
    d[keys[-1]] = value


def parse_sets(sets: list[str] | None) -> dict[str, Any]:
    """Turn ``["a.b=1", "c=[1, 2]"]`` into a nested dict; values are parsed as YAML scalars/lists."""
    out: dict[str, Any] = {}
    for item in sets or []:
        if "=" not in item:
            raise UserError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as e:
            problem = getattr(e, "problem", None) or "not valid YAML"
            raise UserError(f"--set {key.strip()}: {problem} in {raw!r} (quote text: key='[1,'; lists: key=[1,2])") \
                from None
        set_path(out, key.strip(), value)
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def config_from(cls: type[C], data: dict[str, Any], source: str = "config",
                labels: dict[str, str] | None = None) -> C:
    """Validate ``data`` as ``cls``; a validation error is one UserError line (``labels`` rename fields)."""
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise UserError(f"invalid {source}: " + validation_summary(e, labels)) from None


def load_config(
    cls: type[C],
    path: str | os.PathLike[str] | None = None,
    sets: list[str] | None = None,
    labels: dict[str, str] | None = None,
    values: dict[str, Any] | None = None,
    **overrides: Any,
) -> C:
    """The config from a YAML preset (a path, or the name of one in ``pipeline/presets``, with its ``base:``
    chain: :func:`read_preset`), then ``sets`` (``key=value``, dotted keys), then ``values`` (a nested dict: the
    CLI's explicit options), then ``overrides`` (None values left out); ``labels``: see :func:`config_from`.
    """
    data = read_preset(resolve_preset(path)) if path is not None else {}
    data = _merge(data, parse_sets(sets))
    data = _merge(data, values or {})
    data = _merge(data, {k: v for k, v in overrides.items() if v is not None})
    return config_from(cls, data, source=str(path) if path else cls.__name__, labels=labels)


def read_preset(path: Path, below: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A YAML file's mapping with its ``base:`` (a preset name or a path, relative to the file) merged
    under it, recursively: sections deep-merge, the file's own values win. Not a mapping, a missing base
    or a cycle of bases is a one-line UserError."""
    data = _read_yaml(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping at the top level")
    base = data.pop("base", None)
    if base is None:
        return data
    here = path.resolve()
    near = path.parent / str(base)
    try:
        base_path = near if near.is_file() else resolve_preset(str(base))
    except UserError as e:
        raise UserError(f"{path}: base: {e}") from None
    if base_path.resolve() in (*below, here):
        chain = " -> ".join(p.stem for p in (*below, here, base_path.resolve()))
        raise UserError(f"{path}: presets form a cycle of bases ({chain})")
    return _merge(read_preset(base_path, (*below, here)), data)


def _read_yaml(path: Path) -> Any:
    """A YAML file's content; malformed YAML is a one-line UserError naming the file and the line."""
    try:
        with open(path, encoding="utf-8") as fh:
            return yaml.safe_load(fh) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"{path}: not valid YAML{where}: {problem}") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte {e.start})") from None


PRESET_DIR = Path(__file__).parent / "presets"


def resolve_preset(path: str | os.PathLike[str]) -> Path:
    """A YAML path as given, or the shipped preset of that name."""
    p = Path(path)
    if p.is_file():
        return p
    cand = PRESET_DIR / f"{p.name}.yaml" if p.suffix == "" else PRESET_DIR / p.name
    if cand.is_file():
        return cand
    known = sorted(x.stem for x in PRESET_DIR.glob("*.yaml"))
    raise UserError(f"config {str(path)!r} not found (a YAML file, or a preset: {', '.join(known) or 'none'})")


def save_config(cfg: BaseModel, path: str | os.PathLike[str]) -> None:
    """Write the resolved config as YAML, atomically."""
    atomic_write_text(path, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
