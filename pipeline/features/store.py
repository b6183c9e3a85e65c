"""The feature store ``features.h5`` (paper Appendix B): every image's raw per-scale descriptors in HDF5, so
another aggregation never needs the net again. Schema ``vgg-features/1`` and its crash safety: docs/features.md.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pipeline.errors import UserError
from pipeline.features import verify
from pipeline.reuse import Output, Recorded

__all__ = [
    "FORMAT", "AGGREGATES", "L2_PLACES", "StoreLayout", "create_store", "StoreWriter", "FeatureStore",
    "StoreOutput", "part_path", "failed_log_path", "summarise_store", "l2_normalise", "set_read_defaults",
]

FORMAT = "vgg-features/1"
AGGREGATES = ("avg", "stack")
#: where L2 normalisation happens; "aggregate" (the paper: "the resulting image descriptor is
#: L2-normalised") normalises the final descriptor once, after scale aggregation, region and net stacking.
L2_PLACES = ("aggregate", "net", "scale", "both", "none")
CHUNK_BYTES = 1 << 20
_STR = h5py.string_dtype("utf-8")


def part_path(out: str | os.PathLike[str], index: int, count: int) -> Path:
    """The file of part ``index`` of ``count`` of store ``out`` (distributed / fanned-out runs)."""
    out = Path(out)
    return out.with_name(f"{out.name}.part-{index:03d}-of-{count:03d}")


def failed_log_path(path: str | os.PathLike[str]) -> Path:
    """The JSON-lines log of decode failures of an unfinished store."""
    p = Path(path)
    return p.with_name(p.name + ".failed.jsonl")


def l2_normalise(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows divided by their L2 norm (zero rows stay zero)."""
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, eps)


@dataclass
class StoreLayout:
    """Everything fixed when a store is created."""

    ids: list[str]
    labels: np.ndarray
    label_kind: str
    classes: list[str]
    dims: list[int]
    scales: list[int]
    provenance: dict[str, Any]
    identity: dict[str, Any]
    dtype: str = "float32"
    regions: bool = False
    aggregate: str = "avg"
    l2: str = "aggregate"
    row_start: int = 0
    rows_total: int | None = None
    part: tuple[int, int] | None = None
    batch_rows: int = 1  # rows per chunk if > 1 (the writer's batch: each chunk written whole, once); 1: ~1 MiB


def _early(group: h5py.Group, name: str, shape: tuple[int, ...], dtype: Any, chunks: tuple[int, ...],
           checksum: bool = False) -> h5py.Dataset:
    """A chunked dataset whose chunks are all written (zeros) now: the store occupies the disk from its creation,
    and later writes touch raw data only; with ``checksum`` every chunk carries a fletcher32 checksum."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    return group.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks, dcpl=dcpl, fillvalue=0,
                                fletcher32=checksum)


def _chunk_rows(n: int, row_bytes: int, batch: int = 1) -> int:
    return max(1, min(n, batch if batch > 1 else CHUNK_BYTES // max(1, row_bytes)))


def _strings(g: h5py.Group, name: str, values: Sequence[str]) -> None:
    g.create_dataset(name, data=np.asarray(values, dtype=object), dtype=_STR, shape=(len(values),))


def create_store(path: str | os.PathLike[str], layout: StoreLayout, label: str | os.PathLike[str] | None = None
                 ) -> None:
    """Write a new, empty store (every row pending) at ``path`` (errors name ``label``); callers make it atomic.

    Raises UserError for no rows, or a write the disk refused (e.g. full), with the OS error.
    """
    n, dtype = len(layout.ids), np.dtype(layout.dtype)
    if n == 0:
        raise UserError("no images to describe")
    with verify.writing(label or path, "creating it", created=False), h5py.File(path, "w") as f:
        f.attrs.update({
            "format": FORMAT, "provenance": json.dumps(layout.provenance, sort_keys=True, default=str),
            "identity": json.dumps(layout.identity, sort_keys=True), "complete": False,
            "label_kind": layout.label_kind, "scales": np.asarray(layout.scales, dtype=np.int64),
            "nets": len(layout.dims), "dims": np.asarray(layout.dims, dtype=np.int64), "dtype": dtype.name,
            "regions": bool(layout.regions), "aggregate": layout.aggregate, "l2": layout.l2,
            "row_start": int(layout.row_start), "rows_total": int(layout.rows_total or n),
            "part_index": (layout.part or (0, 1))[0], "part_count": (layout.part or (0, 1))[1],
        })
        _strings(f, "ids", layout.ids)
        f.create_dataset("labels", data=np.asarray(layout.labels).astype(np.int8 if layout.label_kind == "multi"
                                                                          else np.int64))
        _strings(f, "classes", layout.classes)
        _early(f, "done", (n,), np.bool_, (_chunk_rows(n, 1 << 4),))
        for g in ("descriptors", "regions") if layout.regions else ("descriptors",):
            for i, d in enumerate(layout.dims):
                grp = f.require_group(f"{g}/net{i}")
                grp.attrs["dim"] = int(d)
                for q in layout.scales:
                    rows = _chunk_rows(n, d * dtype.itemsize, layout.batch_rows)
                    _early(grp, str(q), (n, d), dtype, (rows, d), checksum=True)


class StoreOutput(Output):
    """A feature store as a stage output (:func:`pipeline.reuse.check_reusable`): a finished one is read whole,
    an unfinished one checked for structure; with ``look_into_unfinished=False`` (the whole store while parts
    are written) an unfinished one is neither looked into nor cleaned: the merged parts replace it."""

    what = "a feature store built from other inputs"
    labels = {"checkpoints": "another checkpoint, sha256", "data": "another dataset, fingerprint", "kind": "data kind"}

    def __init__(self, path: str | os.PathLike[str], what: str = what, look_into_unfinished: bool = True) -> None:
        super().__init__(path)
        self.what, self.look = what, look_into_unfinished

    def read(self) -> Recorded | None:
        """The identity and ``complete`` of the store (None: no file; unreadable: identity None, why)."""
        if not self.path.exists():
            return None
        try:
            with h5py.File(self.path, "r", locking=False) as f:
                if f.attrs.get("format") != FORMAT:
                    return Recorded(None, False, f"exists and is not a feature store ({FORMAT})")
                try:
                    return Recorded(json.loads(f.attrs["identity"]), bool(f.attrs["complete"]))
                except (KeyError, ValueError, TypeError):
                    return Recorded(None, False, "damaged feature store (identity attributes missing or unreadable)")
        except OSError as e:
            why = str(e).splitlines()[0][:120]
            return Recorded(None, False, f"exists but cannot be read as a feature store ({why})")

    def problems(self, finished: bool) -> list[str]:
        return verify.verify_file(self.path, data=finished) if finished or self.look else []

    def clean(self) -> None:
        if self.look:
            self.path.unlink(missing_ok=True)
            failed_log_path(self.path).unlink(missing_ok=True)


def _read_failed_log(path: Path, repair: bool = False) -> dict[int, tuple[str, str]]:
    """Rows -> (id, reason) from a failure log; a torn last line (killed mid-write) is dropped."""
    if not path.is_file():
        return {}
    data = path.read_bytes()
    if repair and data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
        with open(path, "r+b") as fh:
            fh.truncate(len(data))
    out: dict[int, tuple[str, str]] = {}
    for line in data.splitlines():
        try:
            rec = json.loads(line)
            out[int(rec["row"])] = (str(rec["id"]), str(rec["reason"]))
        except (ValueError, KeyError, TypeError):
            continue
    return out


class StoreWriter:
    """Writes batches of descriptors into an unfinished store, then finishes it. Without a chunk cache, every
    write reaches the file in its call, so a failed one (a full disk) raises there and its rows stay pending."""

    def __init__(self, path: str | os.PathLike[str], label: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path)
        self.label = Path(label) if label is not None else self.path
        try:
            self.f = h5py.File(self.path, "r+", rdcc_nbytes=0)
        except OSError as e:
            raise UserError(f"cannot open {self.label} for writing ({str(e).splitlines()[0][:120]}); "
                            "is another extraction writing it?") from None
        problems = verify.structure_problems(self.f)
        if problems:
            self.close()
            raise UserError(f"{self.label}: damaged feature store ({problems[0]}); rebuild it with --overwrite")
        a = self.f.attrs
        self.scales = [int(q) for q in a["scales"]]
        self.regions = bool(a["regions"])
        self.dtype = np.dtype(str(a["dtype"]))
        self._ds = {name: self.f[name] for name in verify.descriptor_names(a)}
        self.log = failed_log_path(self.path)
        self.failed = _read_failed_log(self.log, repair=True)

    def processed(self) -> np.ndarray:
        """Rows already handled: done, or recorded as failed."""
        mask = self.f["done"][:].astype(bool)
        mask[list(self.failed)] = True
        return mask

    def _put(self, group: str, start: int, descs: Sequence[np.ndarray], ok: np.ndarray) -> None:
        for i, d in enumerate(descs):
            for si, q in enumerate(self.scales):
                name = f"{group}/net{i}/{q}"
                block = d[:, si].astype(self.dtype, copy=False)
                bad = np.flatnonzero(np.asarray(ok, dtype=bool) & ~np.isfinite(block).all(axis=1))
                if len(bad):
                    raise UserError(f"{self.label}: {verify.nonfinite(name, bad + start, None)}; "
                                    "the net gave NaN/Inf; these rows were not stored")
                self._ds[name][start:start + len(d)] = block

    def write_batch(self, start: int, descs: Sequence[np.ndarray], ok: np.ndarray,
                    failures: Sequence[tuple[int, str, str]] = (), regions: Sequence[np.ndarray] | None = None) -> None:
        """Write rows ``start ..`` (local) of every net and scale, then mark the described (``ok``) ones done.

        ``descs`` (and ``regions``) hold per net a b x S x D array; ``failures``: (local row, id, reason).
        Raises UserError for non-finite descriptors or a failed write (the batch stays pending).
        """
        if self.regions and regions is None:
            raise ValueError("this store keeps region descriptors; pass regions=")
        with verify.writing(self.label, f"rows {start}..{start + len(ok) - 1}"):
            self._put("descriptors", start, descs, ok)
            if self.regions:
                self._put("regions", start, regions, ok)
            self.f.flush()  # data first ...
        if failures:
            with verify.writing(self.label, f"logging decode failures to {self.log.name}"), \
                    open(self.log, "a", encoding="utf-8") as fh:
                fh.write("".join(json.dumps({"row": int(r), "id": key, "reason": reason}) + "\n"
                                 for r, key, reason in failures))
                fh.flush()
                os.fsync(fh.fileno())
            for r, key, reason in failures:
                self.failed[int(r)] = (key, reason)
        with verify.writing(self.label, "marking rows done"):
            self.f["done"][start:start + len(ok)] = np.asarray(ok, dtype=bool)
            self.f.flush()  # ... then the mask that says it is there

    def finalize(self) -> None:
        """Record the failures, confirm every write (fsync, read back), mark the store complete, close it.

        Raises UserError when a write or the read-back fails; the store stays incomplete.
        """
        done = self.f["done"][:].astype(bool)
        if not self.processed().all():
            raise RuntimeError(f"{self.path}: {int((~self.processed()).sum())} rows still pending")
        failed = [(r, k, s) for r, (k, s) in sorted(self.failed.items()) if not done[r]]
        with verify.writing(self.label, "recording decode failures"):
            if "failed" in self.f:  # from an earlier finish that failed afterwards
                del self.f["failed"]
            g = self.f.create_group("failed")
            g.create_dataset("rows", data=np.asarray([r for r, _, _ in failed], dtype=np.int64))
            _strings(g, "ids", [k for _, k, _ in failed])
            _strings(g, "reasons", [s for _, _, s in failed])
        verify.seal(self.f, self.label)
        self.log.unlink(missing_ok=True)

    def close(self) -> None:
        """Close the file; a close that fails after an earlier failure is not reported again."""
        if self.f.id.valid:
            with contextlib.suppress(OSError, RuntimeError, ValueError):
                self.f.close()


class FeatureStore:
    """Read a feature store: ids, labels, classes and descriptors as numpy arrays.

    Only rows that are done are returned (failed images never are), so ``ids``, ``labels`` and
    ``features()`` agree row for row. An incomplete store (an extraction still running or killed) or
    a part is refused unless ``allow_incomplete=True``, which reads the rows done so far.
    """

    def __init__(self, path: str | os.PathLike[str], allow_incomplete: bool = False) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"feature store not found: {self.path}")
        try:
            self._f = h5py.File(self.path, "r", locking=False)
        except OSError as e:
            raise UserError(f"{self.path}: not a readable HDF5 file ({str(e).splitlines()[0][:120]})") from None
        refusal = self._refusal(allow_incomplete)
        if refusal:
            self.close()
            raise UserError(f"{self.path}: {refusal}")
        a = self._f.attrs
        self.complete = bool(a["complete"])
        self.provenance: dict[str, Any] = json.loads(a["provenance"])
        self.identity: dict[str, Any] = json.loads(a["identity"])
        self.label_kind: str = str(a["label_kind"])
        self.scales: list[int] = [int(q) for q in a["scales"]]
        self.nets: list[str] = [f"net{i}" for i in range(int(a["nets"]))]
        self.dims: dict[str, int] = {f"net{i}": int(d) for i, d in enumerate(a["dims"])}
        self.dtype: str = str(a["dtype"])
        self.has_regions: bool = bool(a["regions"])
        self.default_aggregate: str = str(a["aggregate"])
        self.default_l2: str = str(a["l2"])
        self.classes: list[str] = [s.decode() if isinstance(s, bytes) else str(s) for s in self._f["classes"][:]]
        self._done = self._f["done"][:].astype(bool)
        self.rows: np.ndarray = np.flatnonzero(self._done)
        self.rows_total = len(self._done)
        index, count = int(a.get("part_index", 0)), int(a.get("part_count", 1))
        #: (index, count) when this file is one part of a distributed extraction, else None
        self.part: tuple[int, int] | None = (index, count) if count > 1 else None

    def _refusal(self, allow_incomplete: bool) -> str | None:
        a = self._f.attrs
        if a.get("format") != FORMAT:
            return f"not a feature store (format {a.get('format')!r}, expected {FORMAT!r})"
        problems = verify.structure_problems(self._f)
        if problems:
            return (f"damaged feature store: {problems[0]}"
                    + (f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else "")
                    + "; rebuild it with `vgg extract --overwrite`")
        if not bool(a["complete"]) and not allow_incomplete:
            return ("incomplete feature store (extraction unfinished or killed); rerun `vgg extract` with the "
                    "same inputs to resume it, or read with allow_incomplete=True")
        if int(a.get("part_count", 1)) > 1 and not allow_incomplete:
            return (f"part {int(a.get('part_index', 0))} of {int(a['part_count'])} of a store; combine the parts "
                    "with `vgg extract --out STORE --merge` (or read with allow_incomplete=True)")
        try:
            json.loads(a["provenance"]), json.loads(a["identity"])
        except ValueError:
            return "damaged feature store (provenance or identity is not JSON)"
        return None

    # -- rows
    @property
    def n(self) -> int:
        """Number of rows returned (images described)."""
        return len(self.rows)

    def _take(self, ds: h5py.Dataset) -> np.ndarray:
        return ds[:] if len(self.rows) == len(self._done) else ds[:][self.rows]

    @property
    def ids(self) -> np.ndarray:
        """Image ids of the returned rows (source order)."""
        return np.asarray(self._f["ids"].asstr()[:], dtype=object)[self.rows].astype(str)

    @property
    def labels(self) -> np.ndarray:
        """Class index per row (int64, -1 unknown), or an n x C int8 matrix of 1/-1/0 (multi-label)."""
        return self._take(self._f["labels"])

    @property
    def failed(self) -> list[dict[str, str]]:
        """Images that could not be decoded: ``{"id", "reason"}`` each."""
        if "failed" in self._f:
            g = self._f["failed"]
            return [{"id": i, "reason": r} for i, r in zip(g["ids"].asstr()[:], g["reasons"].asstr()[:], strict=False)]
        log = _read_failed_log(failed_log_path(self.path))
        return [{"id": k, "reason": s} for _, (k, s) in sorted(log.items())]

    def _scales(self, scales: Sequence[int] | None) -> list[int]:
        return self._pick("scale", None if scales is None else [int(q) for q in scales], self.scales)

    def _nets(self, nets: Sequence[int | str] | None) -> list[str]:
        names = None if nets is None else [str(x) if str(x).startswith("net") else f"net{x}" for x in nets]
        return self._pick("net", names, self.nets)

    def _pick(self, what: str, asked: list[Any] | None, have: list[Any]) -> list[Any]:
        bad = [x for x in asked or [] if x not in have]
        if bad:
            raise UserError(f"{self.path}: no {what}(s) {bad} (has {have})")
        return list(have if asked is None else asked)

    def raw(self, net: int | str = 0, Q: int | None = None, regions: bool = False) -> np.ndarray:
        """The raw descriptors (float32, n x D) of one net at scale Q (default: the first scale).

        Raises UserError when a chunk fails its checksum or a returned row holds NaN/Inf (naming the rows).
        """
        name = self._nets([net])[0]
        q = self._scales([Q if Q is not None else self.scales[0]])[0]
        if regions and not self.has_regions:
            raise UserError(f"{self.path}: no region descriptors (extract with --boxes)")
        ds_name = f"{'regions' if regions else 'descriptors'}/{name}/{q}"
        try:
            x = self._take(self._f[ds_name]).astype(np.float32)
        except (OSError, RuntimeError) as e:
            raise verify.read_error(self.path, ds_name, e) from None
        bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
        if len(bad):
            ids = self._f["ids"].asstr()[:]
            raise UserError(f"{self.path}: {verify.nonfinite(ds_name, self.rows[bad], ids)}; {verify.REBUILD}")
        return x

    def features(self, aggregate: str | None = None, scales: Sequence[int] | None = None,
                 nets: Sequence[int | str] | None = None, l2: bool | str | None = None,
                 regions: bool = False) -> np.ndarray:
        """The image descriptors (float32, n x D'): ``aggregate`` (avg, stack) over ``scales``, ``nets`` (indices or
        ``"net0"``...) stacked, ``regions`` stacked with each net's, L2 at ``l2`` (one of L2_PLACES, True =
        aggregate, False = none); defaults: every scale and net, the store's aggregate and l2 (docs/features.md)."""
        aggregate = aggregate or self.default_aggregate
        if aggregate not in AGGREGATES:
            raise UserError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
        place = self.default_l2 if l2 is None else l2
        if isinstance(place, bool):
            place = "aggregate" if place else "none"
        if place not in L2_PLACES:
            raise UserError(f"l2 must be one of {L2_PLACES} (or True/False), got {l2!r}")
        qs, names = self._scales(scales), self._nets(nets)
        def over_scales(name: str, reg: bool) -> np.ndarray:
            blocks = [self.raw(name, q, regions=reg) for q in qs]
            if place in ("scale", "both"):
                blocks = [l2_normalise(b) for b in blocks]
            return np.mean(blocks, axis=0) if aggregate == "avg" else np.hstack(blocks)

        per_net = [np.hstack([over_scales(name, reg) for reg in ([False, True] if regions else [False])])
                   for name in names]
        out = np.hstack([l2_normalise(d) for d in per_net] if place == "net" else per_net)
        if place in ("aggregate", "both"):
            out = l2_normalise(out)
        return out.astype(np.float32, copy=False)

    def close(self) -> None:
        if getattr(self, "_f", None) is not None and self._f.id.valid:
            self._f.close()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.path)!r}, n={self.n}, nets={self.nets}, scales={self.scales})"


def set_read_defaults(path: str | os.PathLike[str], aggregate: str, l2: str) -> None:
    """A reused store takes the requested read defaults (aggregate, l2); its data is unchanged."""
    with h5py.File(path, "r", locking=False) as f:
        same = f.attrs["aggregate"] == aggregate and f.attrs["l2"] == l2
    if not same:  # read-only or in use (OSError): the data is what was asked for; keep the old defaults
        with contextlib.suppress(OSError), h5py.File(path, "r+") as f:
            f.attrs["aggregate"], f.attrs["l2"] = aggregate, l2


def summarise_store(path: str | os.PathLike[str]) -> str:
    """A few lines describing a store (``vgg inspect features.h5``); works on unfinished stores too."""
    with FeatureStore(path, allow_incomplete=True) as st:
        prov, part, data = st.provenance, st.part, st.provenance.get("data", {})
        d_avg = sum(st.dims.values()) * (2 if st.has_regions else 1)
        lines = [
            f"{st.path}: feature store {FORMAT}{f', part {part[0]} of {part[1]}' if part else ''}, "
            + ("complete" if st.complete else f"INCOMPLETE ({st.n}/{st.rows_total} rows done; rerun to resume)"),
            f"  data: {data.get('path', '?')} ({data.get('kind', '?')}, split {data.get('split', '?')}, "
            f"fingerprint {data.get('fingerprint', '?')})",
            f"  images: {st.n} described of {st.rows_total}; {len(st.failed)} failed to decode",
            *(f"    failed {f['id']}: {f['reason']}" for f in st.failed[:3]),
            f"  labels: {st.label_kind}-label, {len(st.classes)} classes",
            *(f"  net{i}: {ck.get('path', '?')} (config {m.get('config', '?')}, width {m.get('width', '?')}, "
              f"crop {m.get('crop', '?')}, D={st.dims.get(f'net{i}')}, sha256 {str(ck.get('sha256', ''))[:12]})"
              for i, ck in enumerate(prov.get("checkpoints", [])) for m in [ck.get("model", {})]),
            f"  scales Q: {st.scales}; flip {prov.get('flip')}; regions {st.has_regions}; "
            f"stored as {st.dtype}; precision {prov.get('precision', 'fp32')}",
            f"  read default: aggregate={st.default_aggregate} (avg: {d_avg}-D, stack: {d_avg * len(st.scales)}-D), "
            f"l2={st.default_l2}",
            "  integrity: structure whole; descriptor chunks fletcher32-checksummed "
            "(`vgg extract` with the same inputs reads every chunk before reusing it)",
            f"  pipeline {prov.get('pipeline_version', '?')}, {st.path.stat().st_size / 2**20:.1f} MiB",
        ]
        return "\n".join(lines)
