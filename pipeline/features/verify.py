"""Integrity of feature stores (paper Appendix B): structure on every open, a full read before reuse, a
confirmed read-back before ``complete`` (docs/features.md, "Integrity")."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import h5py
import numpy as np

from pipeline.errors import UserError

__all__ = [
    "writing", "read_error", "structure_problems", "data_problems", "nonfinite", "seal", "verify_file",
    "descriptor_names", "BLOCK_ROWS", "REBUILD",
]

#: rows read at a time when a whole dataset is verified
BLOCK_ROWS = 4096
_ERRNO = re.compile(r"errno = (\d+), error message = '([^']*)'")


def _io_failure(e: BaseException) -> str | None:
    """``"No space left on device (errno 28)"`` when ``e`` is an OS-level failure (from h5py or Python), else None."""
    m = _ERRNO.search(str(e))
    if m:
        return f"{m.group(2)} (errno {m.group(1)})"
    if isinstance(e, OSError) and e.errno:
        return f"{os.strerror(e.errno)} (errno {e.errno})"
    return None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:160]


def _unreadable(name: str, e: BaseException) -> str:
    why = ("checksum mismatch (the data changed after it was written)" if "filter returned failure" in str(e)
           else _io_failure(e) or _first_line(e))
    return f"{name} cannot be read: {why}"


@contextmanager
def writing(path: str | os.PathLike[str], during: str, created: bool = True) -> Iterator[None]:
    """Turn an OS-level failure inside the block (h5py reports them as OSError, RuntimeError or ValueError
    carrying the errno) into one line: the OS error, and that the store stays incomplete (or, not ``created``,
    was not written); anything else (a bug) passes unchanged."""
    try:
        yield
    except (OSError, RuntimeError, ValueError) as e:
        if not isinstance(e, OSError) and _io_failure(e) is None:
            raise
        left = ("the store is left incomplete: free space (or fix the disk) and rerun the same command to resume"
                if created else "no store was written: free space (or fix the disk) and rerun")
        raise UserError(f"cannot write feature store {path} ({during}): {_io_failure(e) or _first_line(e)}; "
                        f"{left}") from None


def read_error(path: str | os.PathLike[str], name: str, e: BaseException) -> UserError:
    """The one-line error of a dataset that cannot be read (a checksum mismatch, a damaged file)."""
    return UserError(f"{path}: {_unreadable(name, e)}; rebuild the store with `vgg extract --overwrite`")


def descriptor_names(attrs: h5py.AttributeManager) -> list[str]:
    """Every descriptor dataset the attributes promise: ``descriptors/net{i}/{Q}`` (and ``regions/...``)."""
    groups = ("descriptors", "regions") if bool(attrs["regions"]) else ("descriptors",)
    return [f"{g}/net{i}/{int(q)}" for g in groups for i in range(int(attrs["nets"])) for q in attrs["scales"]]


def _expect(f: h5py.File, name: str, shape: tuple[int, ...], kind: str | None = None) -> str | None:
    obj = f.get(name)
    if not isinstance(obj, h5py.Dataset):
        return f"dataset {name} is missing"
    if obj.shape != shape:
        return f"dataset {name} has shape {obj.shape}, expected {shape}"
    if kind is not None and obj.dtype.kind != kind and not (kind == "O" and h5py.check_string_dtype(obj.dtype)):
        return f"dataset {name} has dtype {obj.dtype}, expected kind {kind!r}"
    return None


def structure_problems(f: h5py.File) -> list[str]:
    """What is missing or misshapen in an open store (empty when its structure is whole)."""
    a = f.attrs
    missing = [k for k in ("identity", "provenance", "complete", "label_kind", "scales", "nets", "dims", "dtype",
                           "regions") if k not in a]
    if missing:
        return [f"attribute(s) {', '.join(missing)} missing"]
    done = f.get("done")
    if not isinstance(done, h5py.Dataset) or done.ndim != 1:
        return ["dataset done is missing"]
    n = done.shape[0]
    classes = f.get("classes")
    c = classes.shape[0] if isinstance(classes, h5py.Dataset) and classes.ndim == 1 else None
    out = [_expect(f, "ids", (n,), "O"), _expect(f, "classes", (c if c is not None else 0,), "O"),
           _expect(f, "labels", (n, c or 0) if str(a["label_kind"]) == "multi" else (n,))]
    dims = [int(d) for d in a["dims"]]
    if len(dims) != int(a["nets"]):
        out.append(f"attribute dims lists {len(dims)} nets, nets says {int(a['nets'])}")
    else:
        want = np.dtype(str(a["dtype"]))
        for name in descriptor_names(a):
            d = dims[int(name.split("/")[1][3:])]
            p = _expect(f, name, (n, d))
            if p is None and f[name].dtype != want:
                p = f"dataset {name} has dtype {f[name].dtype}, expected {want}"
            elif p is None and not f[name].fletcher32:
                p = f"dataset {name} has no fletcher32 checksum"
            out.append(p)
    if bool(a["complete"]):
        for name in ("failed/rows", "failed/ids", "failed/reasons"):
            obj = f.get(name)
            out.append(None if isinstance(obj, h5py.Dataset) and obj.ndim == 1 else f"dataset {name} is missing")
        if not any(out):
            rows = f["failed/rows"][:]
            mask = done[:].astype(bool)
            if len(rows) and (rows.min() < 0 or rows.max() >= n):
                out.append("failed/rows lists rows outside the store")
            else:
                mask[rows] = True
                if not mask.all():
                    out.append(f"marked complete but {int((~mask).sum())} row(s) are neither done nor failed")
    return [p for p in out if p]


REBUILD = "the store is damaged or was written by a failing net: rebuild it with `vgg extract --overwrite`"


def nonfinite(name: str, rows: np.ndarray, ids: Sequence[str] | None) -> str:
    """``non-finite descriptors (NaN/Inf) in NAME at N row(s): 3 ('a'), 17 ('b') ...``."""
    shown = ", ".join(f"{int(r)}" + (f" ({ids[int(r)]!r})" if ids is not None else "") for r in rows[:5])
    more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
    return f"non-finite descriptors (NaN/Inf) in {name} at {len(rows)} row(s): {shown}{more}"


def data_problems(f: h5py.File, drop_cache: bool = False) -> list[str]:
    """Read every descriptor of an open store whose structure is whole: checksum failures, non-finite done rows
    (``drop_cache``: the kernel drops the file's cached pages first, so the read comes from the disk)."""
    if drop_cache and hasattr(os, "posix_fadvise"):  # not a POSIX file (another driver): read what is there
        with contextlib.suppress(OSError, ValueError, TypeError):
            os.posix_fadvise(f.id.get_vfd_handle(), 0, 0, os.POSIX_FADV_DONTNEED)
    done = f["done"][:].astype(bool)
    for name in descriptor_names(f.attrs):
        ds = f[name]
        for s in range(0, len(done), BLOCK_ROWS):
            try:
                block = ds[s:s + BLOCK_ROWS]
            except (OSError, RuntimeError) as e:
                return [_unreadable(name, e)]
            bad = np.flatnonzero(done[s:s + len(block)] & ~np.isfinite(block).all(axis=1))
            if len(bad):
                return [nonfinite(name, bad + s, list(f["ids"].asstr()[:]))]
    return []


def seal(f: h5py.File, path: str | os.PathLike[str]) -> None:
    """Confirm every write of an open, writable store (fsync, structure, read-back from the disk), then set
    ``complete``, fsync again and close it; a failed write or read-back leaves it incomplete (UserError)."""
    with writing(path, "flushing"):
        f.flush()
        os.fsync(f.id.get_vfd_handle())
    problems = structure_problems(f) or data_problems(f, drop_cache=True)
    if problems:
        raise UserError(f"{path}: the read-back before marking it complete failed: {problems[0]}; "
                        "the store is left incomplete")
    with writing(path, "marking it complete"):
        f.attrs.modify("complete", True)
        f.flush()
        os.fsync(f.id.get_vfd_handle())
        f.close()


def verify_file(path: str | os.PathLike[str], data: bool = True) -> list[str]:
    """Problems of the store at ``path`` (empty when whole): structure, then (``data``) a full read."""
    try:
        with h5py.File(path, "r", locking=False) as f:
            return structure_problems(f) or (data_problems(f) if data else [])
    except OSError as e:
        return [f"not a readable HDF5 file ({_first_line(e)})"]
