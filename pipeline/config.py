"""Stage configuration: one pydantic model per stage, loaded from YAML presets and ``--set``.

Every stage takes exactly one config (a subclass of :class:`StageConfig`), saves the resolved
config next to its outputs, and the Prefect flows take the same models as parameters, so the UI
renders them as forms. See design.md "Configuration flows one way".
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from pipeline.errors import UserError
from pipeline.io import atomic_write_text

__all__ = ["StageConfig", "load_config", "save_config", "parse_sets", "config_from"]

C = TypeVar("C", bound=BaseModel)


class StageConfig(BaseModel):
    """Base of all stage configs: unknown keys are errors, values validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def _set_path(d: dict[str, Any], dotted: str, value: Any) -> None:
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
        _set_path(out, key.strip(), yaml.safe_load(raw) if raw.strip() else None)
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def config_from(cls: type[C], data: dict[str, Any], source: str = "config") -> C:
    """Validate ``data`` as ``cls``; a validation error becomes one readable UserError line."""
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        parts = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"]) or "(root)"
            parts.append(f"{loc}: {err['msg']}")
        raise UserError(f"invalid {source}: " + "; ".join(parts)) from None


def load_config(
    cls: type[C],
    path: str | os.PathLike[str] | None = None,
    sets: list[str] | None = None,
    **overrides: Any,
) -> C:
    """Load a stage config from a YAML preset (a path, or a preset name), then apply ``--set``s.

    Args:
        cls: the stage's config model.
        path: a YAML file, or the name of a preset shipped in ``pipeline/presets`` (without .yaml).
        sets: ``key=value`` strings (dotted keys for nested fields).
        overrides: further fields, applied last (the CLI's explicit options).
    Returns:
        The validated config.
    """
    data: dict[str, Any] = {}
    if path is not None:
        p = resolve_preset(path)
        with open(p, encoding="utf-8") as fh:
            loaded = yaml.safe_load(fh) or {}
        if not isinstance(loaded, dict):
            raise UserError(f"{p}: expected a mapping at the top level")
        data = loaded
    data = _merge(data, parse_sets(sets))
    data = _merge(data, {k: v for k, v in overrides.items() if v is not None})
    return config_from(cls, data, source=str(path) if path else cls.__name__)


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
