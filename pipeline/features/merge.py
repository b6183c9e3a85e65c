"""Merging the part stores of a distributed or fanned-out extraction (paper Appendix B) into one store: parts
checked before anything is written, the merged store confirmed like any store (docs/features.md, "Scale out").
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pipeline.errors import UserError
from pipeline.features.store import FORMAT, StoreLayout, StoreWriter, create_store, failed_log_path, part_path
from pipeline.features.verify import BLOCK_ROWS, descriptor_names, read_error, structure_problems, writing
from pipeline.io import atomic_path

__all__ = ["merge_parts", "finished_parts"]


def finished_parts(out: Path) -> list[Path]:
    """The part files of store ``out`` (``--part i/n`` runs), in order; UserError if none, mixed or missing."""
    pattern = re.compile(re.escape(out.name) + r"\.part-(\d+)-of-(\d+)$")
    counts = {int(m.group(2)) for p in out.parent.glob(f"{out.name}.part-*") if (m := pattern.match(p.name))}
    if not counts:
        raise UserError(f"no parts of {out} to merge (expected {out.name}.part-000-of-NNN ...)")
    if len(counts) > 1:
        raise UserError(f"parts of {out} from runs with different part counts {sorted(counts)}; remove the stale ones")
    count = counts.pop()
    want = [part_path(out, i, count) for i in range(count)]
    missing = [p.name for p in want if not p.exists()]
    if missing:
        raise UserError(f"cannot merge {out}: missing part(s) {', '.join(missing)}")
    return want


def merge_parts(out: str | os.PathLike[str], parts: Sequence[str | os.PathLike[str]]) -> Path:
    """Combine complete part stores (ranks or fanned-out tasks) into one store, rows in source order, written
    under a temporary name and renamed into place; then remove the parts (and the failure log of an earlier
    unfinished run of the whole store). UserError: parts missing, incomplete, of other inputs, or not covering
    every row."""
    out = Path(out)
    files = []
    try:
        for p in parts:
            if not Path(p).is_file():
                raise UserError(f"part {p} is missing")
            files.append(h5py.File(p, "r", locking=False))
        first = files[0].attrs
        ident = first["identity"]
        total = int(first["rows_total"])
        expect = 0
        for p, f in zip(parts, files, strict=False):
            a = f.attrs
            if a.get("format") != FORMAT or a["identity"] != ident:
                raise UserError(f"part {p} was built from other inputs than {parts[0]}")
            if not bool(a["complete"]):
                raise UserError(f"part {p} is incomplete; rerun its extraction first")
            problems = structure_problems(f)
            if problems:
                raise UserError(f"part {p} is damaged ({problems[0]}); rerun its extraction with --overwrite")
            if int(a["row_start"]) != expect or int(a["rows_total"]) != total:
                raise UserError(f"part {p} starts at row {int(a['row_start'])}, expected {expect}")
            expect += len(f["done"])
        if expect != total:
            raise UserError(f"parts cover {expect} of {total} rows")
        prov = json.loads(first["provenance"])
        prov["merged_from"] = [Path(p).name for p in parts]
        labels = np.concatenate([f["labels"][:] for f in files])
        layout = StoreLayout(
            ids=[s for f in files for s in f["ids"].asstr()[:]], labels=labels, label_kind=str(first["label_kind"]),
            classes=list(files[0]["classes"].asstr()[:]), dims=[int(d) for d in first["dims"]],
            scales=[int(q) for q in first["scales"]], provenance=prov, identity=json.loads(ident),
            dtype=str(first["dtype"]), regions=bool(first["regions"]), aggregate=str(first["aggregate"]),
            l2=str(first["l2"]))
        with atomic_path(out) as tmp:
            create_store(tmp, layout, label=out)
            writer = StoreWriter(tmp, label=out)
            try:
                for p, f in zip(parts, files, strict=False):  # the parts' rows and failures, then finish
                    off = int(f.attrs["row_start"])
                    for name in [*descriptor_names(f.attrs), "done"]:
                        _copy_rows(p, f[name], out, writer.f[name], off)
                    fg = f["failed"]
                    writer.failed.update({int(r) + off: (i, s) for r, i, s in zip(
                        fg["rows"][:], fg["ids"].asstr()[:], fg["reasons"].asstr()[:], strict=False)})
                writer.finalize()
            finally:
                writer.close()
    finally:
        for f in files:
            f.close()
    for p in parts:
        Path(p).unlink()
    failed_log_path(out).unlink(missing_ok=True)
    return out


def _copy_rows(src_path: Any, src: h5py.Dataset, out: Path, dst: h5py.Dataset, offset: int) -> None:
    for s in range(0, src.shape[0], BLOCK_ROWS):
        try:
            rows = src[s: s + BLOCK_ROWS]
        except (OSError, RuntimeError) as e:
            raise read_error(src_path, src.name.lstrip("/"), e) from None
        with writing(out, f"copying {src.name.lstrip('/')} of part {Path(src_path).name}"):
            dst[offset + s: offset + s + len(rows)] = rows

