"""One rule for "is this output finished and reusable", shared by every stage (docs/design.md, section 3).

Every stage output records the *identity* of what made it (:func:`identity`: its inputs' sha256 or
fingerprints, the resolved config fields that change the output, a format version) and marks
itself *finished* last, atomically, so a half-written output is never taken as finished. Each
output type is an :class:`Output`; :func:`check_reusable` decides ``reuse``, ``resume`` or
``build`` the same way for all of them (the table in docs/design.md). Stages whose result every
run with other inputs replaces (evaluate, transfer, stats, localisation evaluation, the raw-pixel
store) pass ``overwrite=True``.
"""

from __future__ import annotations

import abc
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from pipeline.errors import UserError
from pipeline.io import atomic_write_json, read_json, sha256_file

__all__ = [
    "Decision", "Recorded", "Output", "JsonRecord", "identity", "differences", "check_reusable", "record_finished",
    "read_record", "config_fields", "input_digests", "IDENTITY_KEY", "NOT_OUTPUT",
]

#: what :func:`check_reusable` decides
Decision = Literal["reuse", "resume", "build"]
#: the key of the identity in a JSON record
IDENTITY_KEY = "identity"
#: config fields that never change a stage's output
NOT_OUTPUT = ("out", "progress", "overwrite", "workers")
_HEX = re.compile(r"^[0-9a-f]{16,64}$")


@dataclass(frozen=True)
class Recorded:
    """What an existing output says about itself.

    ``identity`` is None when the record cannot be read (``problem`` says why); ``finished`` is
    whether the output marked itself complete; ``record`` is the whole record (a JSON record's content).
    """

    identity: dict[str, Any] | None
    finished: bool
    problem: str | None = None
    record: Any = None


def identity(**parts: Any) -> dict[str, Any]:
    """A canonical, JSON-able identity from its parts (tuples become lists, paths strings, keys sorted)."""
    return json.loads(json.dumps(parts, sort_keys=True, default=str))


def config_fields(cfg: BaseModel, *exclude: str) -> dict[str, Any]:
    """The resolved config fields that change a stage's output: all but where it goes, how it reports
    and how fast it runs (``out``, ``progress``, ``overwrite``, ``workers``, ``runtime.threads``) and ``exclude``."""
    skip = {k: True for k in (*NOT_OUTPUT, *exclude) if k in type(cfg).model_fields}
    if "runtime" in type(cfg).model_fields:
        skip["runtime"] = {"threads": True}
    return cfg.model_dump(mode="json", exclude=skip)


def _short(v: Any) -> str:
    if isinstance(v, str) and _HEX.match(v):
        return v[:12]
    if isinstance(v, list) and v and all(isinstance(x, str) and _HEX.match(x) for x in v):
        return ", ".join(x[:12] for x in v)
    return repr(v)


def differences(old: Mapping[str, Any], new: Mapping[str, Any], labels: Mapping[str, str] | None = None,
                prefix: str = "") -> list[str]:
    """Readable ``"<field> <old> vs <new>"`` for every field that differs (nested dicts by dotted name).

    ``labels`` names fields for people (``{"data": "dataset fingerprint"}``); long hex digests are shortened.
    """
    labels = labels or {}
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if a == b:
            continue
        name = prefix + str(k)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += differences(a, b, labels, name + ".")
        else:
            out.append(f"{labels.get(name, name)} {_short(a)} vs {_short(b)}")
    return out


class Output(abc.ABC):
    """An output on disk that records the identity of what made it: the one shape :func:`check_reusable` reads.

    A stage's output type sets ``what`` (for messages: ``"a feature store built from other inputs"``),
    ``hint`` (how a user gets past a refusal) and ``labels`` (identity field names for people,
    :func:`differences`), implements :meth:`read`, and where it applies :meth:`problems` (structural
    check of an output of the same identity) and :meth:`clean` (remove what the stage wrote, before a
    ``build`` over it). ``repairs``: a damaged output of the same identity is continued, not refused
    (the shard writer repairs shard by shard).
    """

    what: str = "an output made from other inputs"
    hint: str = "use --overwrite to replace it, or another --out"
    labels: Mapping[str, str] = {}
    repairs: bool = False

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @abc.abstractmethod
    def read(self) -> Recorded | None:
        """What the output records about itself; None when nothing is there."""

    def problems(self, finished: bool) -> list[str]:
        """What is wrong with an output of the same identity (``finished``: it marked itself complete)."""
        return []

    def clean(self) -> None:
        """Remove what the stage wrote (called before a ``build`` over an unreadable, other or damaged output).

        By default nothing: an output whose files the stage overwrites in place needs no cleaning.
        """
        return None


class JsonRecord(Output):
    """A JSON record written last by :func:`record_finished` (``eval.json``, ``transfer.json``, a step's record)."""

    def __init__(self, path: str | os.PathLike[str], what: str = Output.what, hint: str = Output.hint) -> None:
        super().__init__(path)
        self.what, self.hint = what, hint

    def read(self) -> Recorded | None:
        return read_record(self.path)

    def saved(self, ident: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """The record when it is finished with identity ``ident``, else None (``ident`` None never reuses).

        For results that every run with other inputs replaces (evaluate, transfer, localisation evaluation).
        """
        if ident is None or check_reusable(self, ident, overwrite=True) != "reuse":
            return None
        return dict(self.read().record)  # type: ignore[union-attr]


def check_reusable(output: Output, ident: Mapping[str, Any], overwrite: bool = False) -> Decision:
    """``reuse``, ``resume`` or ``build`` for ``output``, which this run would make with identity ``ident``.

    With ``overwrite``, an unreadable, other or damaged output is cleaned and built again instead of refused.

    Raises:
        UserError: an unreadable record, another identity or a damaged output, without ``overwrite``.
    """
    rec, out = output.read(), output.path
    if rec is None:
        return "build"
    if rec.identity is None or dict(rec.identity) != dict(ident):
        if not overwrite:
            if rec.identity is None:
                problem = rec.problem or "no readable record of what made it"
                raise UserError(f"{problem if problem.startswith(str(out)) else f'{out}: {problem}'}; {output.hint}")
            diff = "; ".join(differences(rec.identity, ident, output.labels)) or "identity"
            raise UserError(f"{out} holds {output.what} ({diff}); {output.hint}")
        output.clean()
        return "build"
    problems = output.problems(rec.finished)
    if problems:
        if output.repairs:
            return "resume"
        if not overwrite:
            state = "marked complete" if rec.finished else "unfinished"
            raise UserError(f"{out} is {state} but damaged ({problems[0]}), so it is not "
                            f"{'reused' if rec.finished else 'resumed'}; {output.hint}")
        output.clean()
        return "build"
    return "reuse" if rec.finished else "resume"


def read_record(path: str | os.PathLike[str]) -> Recorded | None:
    """What the JSON record at ``path`` (written by :func:`record_finished`) says; None when there is none."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        rec = read_json(path)
    except ValueError as e:
        return Recorded(None, False, str(e))
    if not isinstance(rec, dict):
        return Recorded(None, False, f"{path.name} is not a record of a finished run")
    ident = rec.get(IDENTITY_KEY)
    if not isinstance(ident, dict):
        return Recorded(None, False, f"{path.name} does not record what made it", rec)
    return Recorded(ident, True, None, rec)


def input_digests(files: Iterable[str | os.PathLike[str]]) -> list[str] | None:
    """sha256 of every input file, in order; None when one is missing (the stage then fails on it in its own words)."""
    paths = [Path(p) for p in files]
    if not all(p.is_file() for p in paths):
        return None
    return [sha256_file(p) for p in paths]


def record_finished(path: str | os.PathLike[str], ident: Mapping[str, Any], record: Mapping[str, Any]) -> None:
    """Write ``record`` with its identity to ``path`` atomically: call it last, once every other file is in place."""
    atomic_write_json(path, {**record, IDENTITY_KEY: dict(ident)})
