"""``run_shard``: an image collection into validated, resumable WebDataset shards (paper 3.1).

Every split's records are listed in source order, shuffled with a seed, cut into chunks and
prepared (decoded, resized to the smaller side <= S_max, encoded) by worker processes; this
process writes the results in plan order into ``{split}-{000000}.tar`` files with webdataset's
``TarWriter``, starting a new shard at the count or byte limit. Each shard is written under a
temporary name and renamed when complete, then a small state file records which plan positions
(and skips) it covers, so a run killed at any moment resumes after the last complete shard and
ends with exactly the samples of an uninterrupted run. ``manifest.json`` is written last, with
each shard's sample count, byte size and sha256 (what every reader and ``vgg verify`` check).

A run holds ``out/.lock`` (:mod:`pipeline.locks`) from before it touches the folder until it
returns: a second run into the same folder stops with one line, and the temporary files a killed
run left are cleaned by the next one. Keys become tar member names, so :func:`safe_key` escapes
them deterministically: every ``.``, ``/``, ``\\`` and non-printable character (control, format,
line separators, non-ASCII spaces) becomes ``_`` (an empty key becomes ``_``); two records whose
escaped keys collide keep the first and record the second as a "duplicate key" skip.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import save_config
from pipeline.errors import UserError
from pipeline.io import atomic_path, atomic_write_json, atomic_write_text, read_json
from pipeline.locks import folder_lock
from pipeline.results import ShardResult
from pipeline.reuse import Output, Recorded, check_reusable, identity
from pipeline.runtime import Progress, log
from pipeline.shards.config import ShardConfig
from pipeline.shards.manifest import FORMAT, MANIFEST, SKIPPED, dataset_fingerprint, source_fingerprint
from pipeline.shards.parallel import WorkerPool, resolve_workers
from pipeline.shards.process import Options, Prepared, Skipped, prepare_many, skip_category
from pipeline.shards.reader import read_manifest
from pipeline.sources.base import Record, Source, open_source

__all__ = ["run_shard", "ShardResult", "STATE_DIR", "safe_key"]

STATE_DIR = ".shard-state"
CHUNK = 16  # records per worker task (at most)
_TAR_RE = re.compile(r"^(?P<split>[A-Za-z0-9_]+)-(?P<idx>\d{6})\.tar$")
_KEY_SEP = re.compile(r"[./\\]")


class _HashingFile:
    """A write-only file wrapper that keeps the sha256 and byte count of what passes through."""

    def __init__(self, fh) -> None:
        self.fh, self.sha, self.n = fh, hashlib.sha256(), 0

    def write(self, b) -> int:
        self.sha.update(b)
        self.n += len(b)
        return self.fh.write(b)

    def tell(self) -> int:
        return self.n

    def flush(self) -> None:
        self.fh.flush()


def _parse_splits(src: Source, splits: list[str] | None) -> list[tuple[str, str]]:
    have = src.splits()
    pairs = []
    for s in splits or have:
        a, _, b = s.partition(":")
        if a not in have:
            raise UserError(f"{src.root}: no split {a!r} (has {', '.join(have)})")
        b = b or a
        if not re.fullmatch(r"[A-Za-z0-9_]+", b):
            raise UserError(f"split name {b!r}: use letters, digits and _ only")
        pairs.append((a, b))
    if len({b for _, b in pairs}) != len(pairs):
        raise UserError(f"split names repeat: {splits}")
    return pairs


def safe_key(key: str) -> str:
    """``key`` as a tar member stem: ``.``, ``/``, ``\\`` and non-printable characters become ``_``."""
    if key and key.isprintable() and not _KEY_SEP.search(key):
        return key
    return "".join(c if c.isprintable() and c not in "./\\" else "_" for c in key) or "_"


def _dedupe(recs: list[Record]) -> tuple[list[Record], list[Skipped]]:
    """Keys made tar-safe (:func:`safe_key`); repeated keys become skips."""
    seen: set[str] = set()
    keep, dup = [], []
    for r in recs:
        r.key = safe_key(str(r.key))
        if r.key in seen:
            dup.append(Skipped(r.key, str(r.path) if r.path else None, "duplicate key"))
        else:
            seen.add(r.key)
            keep.append(r)
    return keep, dup


def _clean_out(out: Path) -> None:
    """Remove what a shard run writes in ``out`` (for --overwrite); nothing else."""
    for p in out.iterdir():
        if _TAR_RE.match(p.name) or p.name in (MANIFEST, SKIPPED, "config.yaml") or (
                p.name.startswith(".") and p.name.endswith(".tmp")):
            p.unlink()
    shutil.rmtree(out / STATE_DIR, ignore_errors=True)


def _identity(src_fp: str, cfg: ShardConfig) -> dict[str, Any]:
    """What the shards are made from (:mod:`pipeline.reuse`): the source's fingerprint and the config fields
    that shape the samples."""
    return identity(format=FORMAT, source=src_fp, config=cfg.content())


class ShardFolder(Output):
    """A shard folder as a stage output: ``manifest.json`` (finished) or its resume plan (unfinished).

    Damaged (a listed shard missing or of another size) is repaired by rewriting, not refused
    (``repairs``). ``clean`` empties the folder of what the writer wrote; ``cleans=False`` leaves that to
    whoever holds the folder's lock. :attr:`recorded` is what :meth:`read` found last.
    """

    what = "shards of another source or config"
    hint = "pass --overwrite to replace them, or choose another folder"
    labels = {"source": "source fingerprint"}
    repairs = True

    def __init__(self, path: str | os.PathLike[str], cleans: bool = True) -> None:
        super().__init__(path)
        self.cleans, self.recorded = cleans, None

    def read(self) -> Recorded | None:
        self.recorded = self._read()
        return self.recorded

    def _read(self) -> Recorded | None:
        if (self.path / MANIFEST).exists():
            try:
                m = read_manifest(self.path)  # valid JSON, format and structure (shard names, counts)
            except UserError as e:
                return Recorded(None, False, str(e))
            return Recorded(m.get("identity"), True, "manifest.json does not record what made it", m)
        plan = self.path / STATE_DIR / "plan.json"
        if not plan.exists():
            return None
        try:
            return Recorded(read_json(plan).get("identity"), False, f"{plan}: damaged resume state")
        except (ValueError, AttributeError):
            return Recorded(None, False, f"{plan}: damaged resume state")

    def problems(self, finished: bool) -> list[str]:
        if not finished or self.recorded is None:
            return []
        return [f"{s['name']} is missing or of another size" for sp in self.recorded.record["splits"].values()
                for s in sp["shards"] if not ((self.path / s["name"]).is_file()
                                              and (self.path / s["name"]).stat().st_size == s["bytes"])]

    def clean(self) -> None:
        if self.cleans:
            _clean_out(self.path)


def _check_existing(out: Path, ident: dict[str, Any], overwrite: bool) -> dict[str, Any] | None:
    """The finished manifest if it is up to date (every shard present with its size); refuse or clean a folder
    of another identity (:func:`pipeline.reuse.check_reusable`)."""
    folder = ShardFolder(out)
    if check_reusable(folder, ident, overwrite) == "reuse":
        return folder.recorded.record  # type: ignore[union-attr]
    (out / MANIFEST).unlink(missing_ok=True)  # shards are rewritten: nothing claims to be finished until then
    return None


def _load_state(state: Path, split: str, out: Path) -> tuple[list[dict[str, Any]], bool]:
    """Complete shards of a split from earlier runs (a prefix), and whether the split is finished."""
    done: list[dict[str, Any]] = []
    i = 0
    while (f := state / f"{split}-{i:06d}.json").exists():
        s = read_json(f)
        if s["name"] is not None:
            p = out / s["name"]
            if not p.is_file() or p.stat().st_size != s["bytes"]:
                break
        done.append(s)
        if s.get("final"):
            return done, True
        i += 1
    for f in state.glob(f"{split}-*.json"):  # anything after the prefix is redone
        if int(f.stem.rsplit("-", 1)[1]) >= len(done):
            f.unlink()
    for p in out.glob(f"{split}-*.tar"):
        m = _TAR_RE.match(p.name)
        if m and m["split"] == split and int(m["idx"]) >= len(done):
            p.unlink()
    return done, False


def _write_state(path: Path, obj: dict[str, Any]) -> None:
    """Write a state file by rename (atomic against kill -9; the shard itself is fsynced)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj), encoding="utf-8")
    os.replace(tmp, path)


class _SplitWriter:
    """Writes one split's prepared samples in plan order, rotating shards at the limits."""

    def __init__(self, out: Path, state: Path, split: str, cfg: ShardConfig, classes: list[str],
                 index: int, start: int) -> None:
        self.out, self.state, self.split, self.cfg, self.classes = out, state, split, cfg, classes
        self.index, self.start = index, start
        self.tw = self.fh = self.hf = self.ctx = None
        self.count, self.per_class, self.skipped = 0, Counter(), []
        self.records: list[dict[str, Any]] = []

    def _open(self) -> None:
        name = f"{self.split}-{self.index:06d}.tar"
        self.ctx = atomic_path(self.out / name)
        tmp = self.ctx.__enter__()
        self.fh = open(tmp, "wb")
        self.hf = _HashingFile(self.fh)
        import webdataset as wds  # imports torch: only when shards are written

        self.tw = wds.TarWriter(self.hf, encoder=False, mtime=0, user="vgg", group="vgg")  # pax (tarfile default)

    def _close(self, end: int, final: bool) -> None:
        name = None
        nbytes, sha = 0, None
        if self.tw is not None:
            self.tw.close()
            self.fh.close()
            name = f"{self.split}-{self.index:06d}.tar"
            nbytes, sha = self.hf.n, self.hf.sha.hexdigest()
            self.ctx.__exit__(None, None, None)
        rec = {"name": name, "start": self.start, "end": end, "count": self.count, "bytes": nbytes,
               "sha256": sha, "per_class": dict(self.per_class), "final": final,
               "skipped": [s.__dict__ for s in self.skipped]}
        _write_state(self.state / f"{self.split}-{self.index:06d}.json", rec)
        self.records.append(rec)
        self.index += 1
        self.start = end
        self.tw = self.fh = self.hf = self.ctx = None
        self.count, self.per_class, self.skipped = 0, Counter(), []

    def add(self, pos: int, item: Prepared | Skipped) -> None:
        if isinstance(item, Skipped):
            self.skipped.append(item)
            return
        sample = item.sample()
        est = sum(len(v) + 1024 for k, v in sample.items() if k != "__key__")
        if self.tw is not None and (self.count >= self.cfg.shard_count or self.hf.n + est > self.cfg.shard_bytes):
            self._close(pos, final=False)
        if self.tw is None:
            self._open()
        self.tw.write(sample)
        self.count += 1
        if item.cls is not None:
            self.per_class[self.classes[item.cls]] += 1
        for c, v in zip(self.classes, item.meta.get("labels") or [], strict=False):
            if v == 1:
                self.per_class[c] += 1

    def finish(self, end: int) -> None:
        self._close(end, final=True)

    def abort(self) -> None:
        if self.tw is not None:
            try:
                self.tw.close()
                self.fh.close()
            finally:
                self.ctx.__exit__(RuntimeError, None, None)


def _plan(recs: list[Record], cfg: ShardConfig) -> list[Record]:
    if not cfg.shuffle:
        return recs
    order = np.random.default_rng(cfg.seed).permutation(len(recs))
    return [recs[i] for i in order]


def _manifest(src: Source, src_fp: str, fp: str, cfg: ShardConfig, pairs: list[tuple[str, str]],
              states: dict[str, list[dict[str, Any]]], dups: dict[str, list[Skipped]]) -> tuple[dict, list[dict]]:
    splits: dict[str, Any] = {}
    skipped_rows: list[dict[str, Any]] = []
    for _, dest in pairs:
        per_class = Counter({c: 0 for c in src.classes})
        shards, count = [], 0
        rows = [dict(s.__dict__, split=dest) for s in dups.get(dest, [])]
        for s in states[dest]:
            per_class.update(s["per_class"])
            count += s["count"]
            rows += [dict(k, split=dest) for k in s["skipped"]]
            if s["name"] is not None:
                shards.append({"name": s["name"], "count": s["count"], "bytes": s["bytes"], "sha256": s["sha256"]})
        splits[dest] = {"count": count, "per_class": {c: per_class[c] for c in src.classes}, "shards": shards,
                        "found": count + len(rows), "skipped": len(rows)}
        skipped_rows += rows
    by_reason = Counter(skip_category(r["reason"]) for r in skipped_rows)
    m = {"format": FORMAT,
         "source": {"kind": src.kind, "root": str(src.root), "fingerprint": src_fp},
         "classes": list(src.classes),
         "label_kind": getattr(src, "label_kind", "single"),
         "splits": splits,
         "config": cfg.model_dump(mode="json"),
         "skipped": {"count": len(skipped_rows), "by_reason": dict(by_reason.most_common())},
         "fingerprint": fp, "identity": _identity(src_fp, cfg)}
    return m, skipped_rows


def _write_splits(out: Path, cfg: ShardConfig, src: Source, pairs: list[tuple[str, str]],
                  plans: dict[str, list[Record]]) -> tuple[dict[str, list[dict[str, Any]]], bool]:
    """Write (or resume) every split's shards; (shard states per split, whether anything was resumed)."""
    state = out / STATE_DIR
    opts = Options(max_side=cfg.max_side, quality=cfg.quality, keep_original=cfg.keep_original,
                   draft=cfg.draft, max_pixels=cfg.max_pixels)
    workers = resolve_workers(cfg.workers)
    states: dict[str, list[dict[str, Any]]] = {}
    resumed = False
    for _, dest in pairs:
        prev, finished = _load_state(state, dest, out)
        resumed = resumed or bool(prev)
        states[dest] = prev
        if finished:
            continue
        recs = plans[dest]
        start = prev[-1]["end"] if prev else 0
        w = _SplitWriter(out, state, dest, cfg, src.classes, len(prev), start)
        chunk = max(1, min(CHUNK, (len(recs) - start) // (8 * workers)))  # small runs still balance
        chunks = (recs[i:i + chunk] for i in range(start, len(recs), chunk))
        try:
            with WorkerPool(workers) as pool, Progress(len(recs) - start, f"shard {dest}", cfg.progress) as bar:
                pos = start
                for results in pool.ordered_map(prepare_many, chunks, opts):
                    for item in results:
                        w.add(pos, item)
                        pos += 1
                    bar.advance(len(results))
            w.finish(len(recs))
        except BaseException:
            w.abort()
            raise
        states[dest] = prev + w.records
    return states, resumed


def _clean_stale(out: Path) -> None:
    """Temporaries of a killed run (safe: the caller holds the folder's lock, so no run is writing)."""
    for p in [*out.glob(".*.tmp"), *(out / STATE_DIR).glob(".*.tmp")]:
        p.unlink(missing_ok=True)


def _finish(out: Path, cfg: ShardConfig, src: Source, src_fp: str, fp: str, pairs: list[tuple[str, str]],
            states: dict[str, list[dict[str, Any]]], dups: dict[str, list[Skipped]], found: int) -> dict[str, Any]:
    """Reconcile the counts, write skipped.jsonl, config.yaml and (last) manifest.json."""
    manifest, skipped_rows = _manifest(src, src_fp, fp, cfg, pairs, states, dups)
    written = sum(sp["count"] for sp in manifest["splits"].values())
    if found != written + manifest["skipped"]["count"]:
        raise RuntimeError(f"reconciliation failed: found {found} != written {written} "
                           f"+ skipped {manifest['skipped']['count']}")
    atomic_write_text(out / SKIPPED, "".join(json.dumps(r, sort_keys=True) + "\n" for r in skipped_rows))
    save_config(cfg, out / "config.yaml")
    atomic_write_json(out / MANIFEST, manifest)  # last: its presence means the job is complete
    shutil.rmtree(out / STATE_DIR, ignore_errors=True)
    return manifest


@dataclass
class _Job:
    """What a shard run is made from: the opened source, its splits' seeded plans and fingerprints."""

    src: Source
    detected: str
    pairs: list[tuple[str, str]]
    plans: dict[str, list[Record]]
    dups: dict[str, list[Skipped]]
    src_fp: str
    fp: str
    ident: dict[str, Any]

    @property
    def found(self) -> int:
        return sum(len(p) + len(self.dups[b]) for b, p in self.plans.items())


def _open_job(cfg: ShardConfig) -> _Job:
    """Open the source and plan every split (the same for a one-process run, its parts and their merge)."""
    src = open_source(cfg.source, cfg.format, **cfg.source_options)
    detected = src.kind if cfg.format != "auto" else f"{src.kind} (detected)"
    log(f"source {src.root}: {detected}, {len(src.classes)} classes", cfg.progress)
    pairs = _parse_splits(src, cfg.splits)
    plans: dict[str, list[Record]] = {}
    dups: dict[str, list[Skipped]] = {}
    for a, b in pairs:
        recs, dups[b] = _dedupe(list(src.records(a)))
        plans[b] = _plan(recs, cfg)
    by_key = {b: sorted(p, key=lambda r: r.key) for b, p in plans.items()}
    src_fp = source_fingerprint(src.kind, src.classes, by_key, src.root)
    fp = dataset_fingerprint(src_fp, cfg.content())
    return _Job(src, detected, pairs, plans, dups, src_fp, fp, _identity(src_fp, cfg))


def _out_dir(cfg: ShardConfig) -> Path:
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: output folder is a file")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _result(out: Path, manifest: dict[str, Any], job: _Job, resumed: bool, progress: bool) -> ShardResult:
    """The :class:`ShardResult` of a finished shard folder (logged)."""
    written = sum(sp["count"] for sp in manifest["splits"].values())
    empty = {}
    for name, sp in manifest["splits"].items():
        missing = [c for c, n in sp["per_class"].items() if n == 0]
        if missing:
            empty[name] = missing
    res = ShardResult(out=out, manifest=manifest, resumed=resumed, written=written,
                      skipped=manifest["skipped"]["count"], found=job.found, empty_classes=empty,
                      detected=job.detected)
    log(res.summary(), progress)
    return res


def run_shard(cfg: ShardConfig) -> ShardResult:
    """Write the shards of ``cfg.source`` into ``cfg.out`` (resuming or doing nothing when possible).

    With ``cfg.part`` ("i/n") only part i of n is written (into ``out/.parts/i-of-n``); with
    ``cfg.merge`` the finished parts become the shard folder (:mod:`pipeline.shards.parts`).

    Args:
        cfg: the shard stage config.
    Returns:
        A :class:`ShardResult` with the manifest (also in ``out/manifest.json``) and the counts
        (for a part: its part record and folder).
    Raises:
        UserError: unknown source or split, an output folder holding another fingerprint (unless
            ``cfg.overwrite``), an output path that is a file, or another run writing the folder;
            for a merge, missing parts or parts of another source or config.
    """
    if cfg.part is not None or cfg.merge:
        from pipeline.shards.parts import run_merge, run_part

        return run_part(cfg) if cfg.part is not None else run_merge(cfg)
    job = _open_job(cfg)
    out = _out_dir(cfg)
    with folder_lock(out, f"shard folder {out}"):
        done = _check_existing(out, job.ident, cfg.overwrite)
        if done is not None:
            res = ShardResult(out=out, manifest=done, nothing_to_do=True, detected=job.detected)
            log(res.summary(), cfg.progress)
            return res
        (out / STATE_DIR).mkdir(exist_ok=True)
        _clean_stale(out)
        atomic_write_json(out / STATE_DIR / "plan.json", {"fingerprint": job.fp, "identity": job.ident})
        states, resumed = _write_splits(out, cfg, job.src, job.pairs, job.plans)
        manifest = _finish(out, cfg, job.src, job.src_fp, job.fp, job.pairs, states, job.dups, job.found)
    return _result(out, manifest, job, resumed, cfg.progress)
