"""The one exception type for user errors, and the rule that tells expected failures (one line, exit 2)
from bugs (a traceback): docs/design.md 1, "Expected failures are one line"."""

from __future__ import annotations

import re
import sys
import traceback

__all__ = ["UserError", "is_expected", "one_line", "validation_summary", "WORKER_MARK"]


class UserError(Exception):
    """An error the user can fix: its message is printed as one line."""


#: What torch puts at the start of an exception re-raised from a DataLoader worker process.
WORKER_MARK = re.compile(r"^Caught (\w+) in DataLoader worker process \d+\.")

#: Packages whose exceptions mean "this file is damaged or not what it should be", not a bug here.
_FILE_PACKAGES = ("h5py", "tarfile", "zipfile", "gzip", "bz2", "lzma", "webdataset", "PIL", "yaml", "json")


def _decode_errors() -> tuple[type[BaseException], ...]:
    import json
    import pickle
    import tarfile
    import zipfile

    types: list[type[BaseException]] = [UserError, OSError, EOFError, UnicodeError, json.JSONDecodeError,
                                        tarfile.TarError, zipfile.BadZipFile, pickle.UnpicklingError]
    for module, name in (("yaml", "YAMLError"), ("pydantic", "ValidationError")):
        mod = sys.modules.get(module)
        if mod is not None:
            types.append(getattr(mod, name))
    return tuple(types)


def _innermost_path(exc: BaseException) -> list[str]:
    """The path parts of the file of the innermost frame of ``exc``'s traceback."""
    frames = [frame for frame, _ in traceback.walk_tb(exc.__traceback__)]
    return re.split(r"[\\/]", frames[-1].f_code.co_filename) if frames else []


def _worker_type(exc: BaseException) -> str | None:
    m = WORKER_MARK.match(str(exc))
    return m.group(1) if m else None


def is_expected(exc: BaseException) -> bool:
    """True for failures the user can fix (printed as one line, exit 2); False for bugs."""
    expected = _decode_errors()
    if isinstance(exc, expected):  # also what torch re-raises from a loader worker as the same type
        return True
    worker = _worker_type(exc)
    if worker is not None:  # a worker's exception torch could not re-raise as its own type
        return worker in {t.__name__ for t in expected}
    parts = _innermost_path(exc)
    if isinstance(exc, RuntimeError) and "torch" in parts and "serialization.py" in parts:
        return True  # torch.load of a file that is not a checkpoint (bad zip, truncated)
    return isinstance(exc, (KeyError, ValueError, RuntimeError)) and any(p in parts or f"{p}.py" in parts
                                                                          for p in _FILE_PACKAGES)


def validation_summary(exc: BaseException, labels: dict[str, str] | None = None) -> str:
    """A pydantic ValidationError as ``field: problem; ...`` (``labels`` rename fields)."""
    parts = []
    for err in exc.errors():  # type: ignore[attr-defined]
        loc = ".".join(str(x) for x in err["loc"]) or "(root)"
        loc = (labels or {}).get(loc, loc)
        msg = re.sub(r"^(Value|Assertion) error, ", "", err["msg"])
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def one_line(exc: BaseException, labels: dict[str, str] | None = None) -> str:
    """The one-line message of an expected failure; ``labels`` name config fields (``{"scales": "--scales"}``)."""
    text = str(exc)
    if _worker_type(exc) is not None:  # torch's "Caught X in DataLoader worker ... Original Traceback ..."
        lines = [ln for ln in text.strip().splitlines() if ln.strip()]
        orig = next((i for i in range(len(lines) - 1, -1, -1) if re.match(r"^[\w.]+(Error|Exception)\b", lines[i])),
                    None)
        text = " ".join(ln.strip() for ln in lines[orig:]) if orig is not None else lines[-1]
        text = re.sub(r"^[\w.]*\.(\w+): ", lambda m: "" if m.group(1) == "UserError" else f"{m.group(1)}: ", text)
        text = re.sub(r"^UserError: ", "", text)
    elif hasattr(exc, "errors") and type(exc).__name__ == "ValidationError":
        text = f"invalid {getattr(exc, 'title', 'config')}: {validation_summary(exc, labels)}"
    elif isinstance(exc, FileNotFoundError):
        text = f"file not found: {exc.filename}" if exc.filename else text
    elif isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        where += f" -> {exc.filename2}" if exc.filename2 else ""
        text = f"{exc.strerror}{where}"
    elif isinstance(exc, UnicodeDecodeError):
        text = f"not UTF-8 text ({exc.reason} at byte {exc.start})"
    elif not isinstance(exc, UserError):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return " ".join(text.split()) or type(exc).__name__
