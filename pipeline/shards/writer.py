"""Writing a shard folder (paper 3.1 "Training image size": every image stored once, rescaled to S_max): the
seeded plan, the shards in plan order (resumable shard by shard), ``manifest.json`` last (docs/shards.md)."""

from __future__ import annotations

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
from pipeline.io import atomic_path, atomic_write_json, atomic_write_text, read_json, sha256_file
from pipeline.results import ShardResult
from pipeline.reuse import Output, Recorded, config_fields, identity, read_record
from pipeline.runtime import Progress, cpu_count, log
from pipeline.shards.config import ShardConfig
from pipeline.shards.process import Prepared, Skipped, WorkerPool, prepare_many, skip_category
from pipeline.shards.reader import FORMAT, MANIFEST, SKIPPED, dataset_fingerprint, read_manifest, source_fingerprint
from pipeline.sources.base import Record, Source, open_source

__all__ = ["ShardJob", "ShardFolder", "STATE_DIR", "open_shard_job", "safe_key", "clean_stale", "write_splits",
           "assemble_manifest", "finish_folder"]

STATE_DIR = ".shard-state"
CHUNK = 16  # records per worker task (at most)
_TAR_RE = re.compile(r"^(?P<split>[A-Za-z0-9_]+)-(?P<idx>\d{6})\.tar$")

States = dict[str, list[dict[str, Any]]]  # per split: the records of its shards, in order


@dataclass
class ShardJob:
    """What a shard run is made from (its helpers' context): the config, the opened source, every split's
    seeded plan, the duplicate-key skips and the fingerprints, and the shard folder."""

    cfg: ShardConfig
    src: Source
    detected: str
    pairs: list[tuple[str, str]]
    plans: dict[str, list[Record]]
    dups: dict[str, list[Skipped]]
    src_fp: str
    fp: str
    ident: dict[str, Any]
    out: Path

    @property
    def found(self) -> int:
        return sum(len(p) + len(self.dups[b]) for b, p in self.plans.items())

    def result(self, out: Path, manifest: dict[str, Any], part: str | None = None, found: int | None = None,
               resumed: bool = False) -> ShardResult:
        """The :class:`ShardResult` of ``out``: nothing was to do (no ``found``), or what was written."""
        if found is None:
            return ShardResult(out=out, manifest=manifest, nothing_to_do=True, detected=self.detected, part=part)
        empty = {} if part else {name: missing for name, sp in manifest["splits"].items()
                                 if (missing := [c for c, n in sp["per_class"].items() if n == 0])}
        return ShardResult(out=out, manifest=manifest, resumed=resumed, found=found, empty_classes=empty,
                           written=sum(sp["count"] for sp in manifest["splits"].values()),
                           skipped=manifest["skipped"]["count"], detected=self.detected, part=part)


def safe_key(key: str) -> str:
    """``key`` as a tar member stem: ``.``, ``/``, ``\\`` and non-printable characters become ``_``."""
    return "".join(c if c.isprintable() and c not in "./\\" else "_" for c in key) or "_"


def _parse_splits(src: Source, splits: list[str] | None) -> list[tuple[str, str]]:
    """(source split, written name) pairs of ``splits`` (``src:dest`` renames)."""
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


def _dedupe(recs: list[Record]) -> tuple[list[Record], list[Skipped]]:
    """Keys made tar-safe (:func:`safe_key`); a repeated key is a "duplicate key" skip."""
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


def open_shard_job(cfg: ShardConfig) -> ShardJob:
    """Open the source, plan every split (the same for a one-process run, its parts and their merge), make the
    output folder."""
    src = open_source(cfg.source, cfg.format, **cfg.source_options)
    detected = src.kind if cfg.format != "auto" else f"{src.kind} (detected)"
    log(f"source {src.root}: {detected}, {len(src.classes)} classes", cfg.progress)
    pairs = _parse_splits(src, cfg.splits)
    plans: dict[str, list[Record]] = {}
    dups: dict[str, list[Skipped]] = {}
    for a, b in pairs:
        recs, dups[b] = _dedupe(list(src.records(a)))
        order = np.random.default_rng(cfg.seed).permutation(len(recs)) if cfg.shuffle else range(len(recs))
        plans[b] = [recs[i] for i in order]
    src_fp = source_fingerprint(src.kind, src.classes, {b: sorted(p, key=lambda r: r.key) for b, p in plans.items()},
                                src.root)
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: output folder is a file")
    out.mkdir(parents=True, exist_ok=True)
    # the fields that shape the samples: a merge of parts has the identity of a one-process run
    content = config_fields(cfg, "source", "part", "merge")
    ident = identity(format=FORMAT, source=src_fp, config=content)
    return ShardJob(cfg, src, detected, pairs, plans, dups, src_fp, dataset_fingerprint(src_fp, content), ident, out)


def clean_stale(out: Path) -> None:
    """Temporaries of a killed run (safe: the caller holds the folder's lock, so no run is writing)."""
    for p in [*out.glob(".*.tmp"), *(out / STATE_DIR).glob(".*.tmp")]:
        p.unlink(missing_ok=True)


class ShardFolder(Output):
    """A shard folder (or a part's) as a stage output: its ``record`` (finished) or its resume plan (unfinished); a
    listed shard missing or of another size is repaired by rewriting; ``cleans=False`` leaves cleaning to whoever
    holds the folder's lock. :attr:`recorded` is what :meth:`read` found last."""

    what = "shards of another source or config"
    hint = "pass --overwrite to replace them, or choose another folder"
    labels = {"source": "source fingerprint"}
    repairs = True

    def __init__(self, path: str | os.PathLike[str], cleans: bool = True, record: str = MANIFEST,
                 what: str | None = None) -> None:
        super().__init__(path)
        self.cleans, self.record, self.recorded = cleans, record, None
        self.what = what or self.what

    def read(self) -> Recorded | None:
        self.recorded = self._read()
        return self.recorded

    def _read(self) -> Recorded | None:
        if (self.path / self.record).exists():
            try:
                m = read_manifest(self.path, self.record)  # valid JSON, format and structure (shard names, counts)
            except UserError as e:
                return Recorded(None, False, str(e))
            ident = m.get("identity")
            return Recorded(ident if isinstance(ident, dict) else None, True,
                            f"{self.record} does not record what made it", m)
        plan = read_record(self.path / STATE_DIR / "plan.json")  # unfinished: the resume plan
        return plan and Recorded(plan.identity, False, f"{self.path / STATE_DIR}/plan.json: damaged resume state")

    def problems(self, finished: bool) -> list[str]:
        if not finished or self.recorded is None:
            return []
        return [f"{s['name']} is missing or of another size" for sp in self.recorded.record["splits"].values()
                for s in sp["shards"] if not ((self.path / s["name"]).is_file()
                                              and (self.path / s["name"]).stat().st_size == s["bytes"])]

    def clean(self) -> None:
        """Remove what a shard run writes in the folder (for --overwrite); nothing else."""
        if not self.cleans:
            return
        for p in self.path.iterdir():
            if _TAR_RE.match(p.name) or p.name in (self.record, MANIFEST, SKIPPED, "config.yaml") or (
                    p.name.startswith(".") and p.name.endswith(".tmp")):
                p.unlink()
        shutil.rmtree(self.path / STATE_DIR, ignore_errors=True)

    def unmark(self) -> None:
        """Remove the record before the shards are rewritten: nothing claims to be finished until then."""
        (self.path / self.record).unlink(missing_ok=True)


def _load_state(state: Path, split: str, out: Path) -> tuple[list[dict[str, Any]], bool]:
    """Complete shards of a split from earlier runs (a prefix), and whether the split is finished."""
    done: list[dict[str, Any]] = []
    while (f := state / f"{split}-{len(done):06d}.json").exists():
        s = read_json(f)
        if s["name"] is not None and not ((out / s["name"]).is_file()
                                          and (out / s["name"]).stat().st_size == s["bytes"]):
            break
        done.append(s)
        if s.get("final"):
            return done, True
    for f in state.glob(f"{split}-*.json"):  # anything after the prefix is redone
        if int(f.stem.rsplit("-", 1)[1]) >= len(done):
            f.unlink()
    for p in out.glob(f"{split}-*.tar"):
        m = _TAR_RE.match(p.name)
        if m and m["split"] == split and int(m["idx"]) >= len(done):
            p.unlink()
    return done, False


class _SplitWriter:
    """Writes one split's prepared samples in plan order, rotating shards at the limits; each shard is written
    under a temporary name, renamed when complete, then its state file (atomic) records what it covers."""

    def __init__(self, job: ShardJob, out: Path, split: str, index: int, start: int) -> None:
        self.cfg, self.classes, self.out, self.split = job.cfg, job.src.classes, out, split
        self.index, self.start = index, start
        self.tw = self.fh = self.ctx = None
        self.count, self.per_class, self.skipped = 0, Counter(), []
        self.records: list[dict[str, Any]] = []

    def _open(self) -> None:
        import webdataset as wds  # imports torch: only when shards are written

        self.ctx = atomic_path(self.out / f"{self.split}-{self.index:06d}.tar")
        self.fh = open(self.ctx.__enter__(), "wb")
        self.tw = wds.TarWriter(self.fh, encoder=False, mtime=0, user="vgg", group="vgg")

    def _close(self, end: int, final: bool) -> None:
        name, nbytes, sha = None, 0, None
        if self.tw is not None:
            self.tw.close()
            nbytes = self.fh.tell()
            self.fh.close()
            name, sha = f"{self.split}-{self.index:06d}.tar", sha256_file(self.ctx.tmp)
            self.ctx.__exit__(None, None, None)
        rec = {"name": name, "start": self.start, "end": end, "count": self.count, "bytes": nbytes,
               "sha256": sha, "per_class": dict(self.per_class), "final": final,
               "skipped": [s.__dict__ for s in self.skipped]}
        atomic_write_json(self.out / STATE_DIR / f"{self.split}-{self.index:06d}.json", rec)
        self.records.append(rec)
        self.index, self.start = self.index + 1, end
        self.tw = self.fh = self.ctx = None
        self.count, self.per_class, self.skipped = 0, Counter(), []

    def add(self, pos: int, item: Prepared | Skipped) -> None:
        if isinstance(item, Skipped):
            self.skipped.append(item)
            return
        sample = item.sample()
        est = sum(len(v) + 1024 for k, v in sample.items() if k != "__key__")
        if self.tw is not None and (self.count >= self.cfg.shard_count or self.fh.tell() + est > self.cfg.shard_bytes):
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


def write_splits(job: ShardJob, out: Path, ident: dict[str, Any],
                 plans: dict[str, list[Record]]) -> tuple[States, bool]:
    """Write (or resume) every split's ``plans`` into ``out`` (whose lock the caller holds); (shard states per
    split, whether anything was resumed)."""
    (out / STATE_DIR).mkdir(exist_ok=True)
    clean_stale(out)
    atomic_write_json(out / STATE_DIR / "plan.json", {"fingerprint": job.fp, "identity": ident})
    cfg = job.cfg
    workers = cfg.workers or cpu_count()
    states: States = {}
    resumed = False
    for _, dest in job.pairs:
        prev, finished = _load_state(out / STATE_DIR, dest, out)
        resumed, states[dest] = resumed or bool(prev), prev
        if finished:
            continue
        recs = plans[dest]
        start = prev[-1]["end"] if prev else 0
        w = _SplitWriter(job, out, dest, len(prev), start)
        chunk = max(1, min(CHUNK, (len(recs) - start) // (8 * workers)))  # small runs still balance
        chunks = (recs[i:i + chunk] for i in range(start, len(recs), chunk))
        try:
            with WorkerPool(workers) as pool, Progress(len(recs) - start, f"shard {dest}", cfg.progress) as bar:
                pos = start
                for results in pool.ordered_map(prepare_many, chunks, cfg):
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


def assemble_manifest(job: ShardJob, states: States, dups: dict[str, list[Skipped]],
                      found: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The manifest of ``states`` and its skip rows, its counts reconciled with the ``found`` records."""
    splits: dict[str, Any] = {}
    skipped_rows: list[dict[str, Any]] = []
    for _, dest in job.pairs:
        per_class = Counter({c: 0 for c in job.src.classes})
        shards, count = [], 0
        rows = [dict(s.__dict__, split=dest) for s in dups.get(dest, [])]
        for s in states[dest]:
            per_class.update(s["per_class"])
            count += s["count"]
            rows += [dict(k, split=dest) for k in s["skipped"]]
            if s["name"] is not None:
                shards.append({"name": s["name"], "count": s["count"], "bytes": s["bytes"], "sha256": s["sha256"]})
        splits[dest] = {"count": count, "per_class": {c: per_class[c] for c in job.src.classes}, "shards": shards,
                        "found": count + len(rows), "skipped": len(rows)}
        skipped_rows += rows
    if found != (written := sum(sp["count"] for sp in splits.values())) + len(skipped_rows):
        raise RuntimeError(f"reconciliation failed: found {found} != written {written} + skipped {len(skipped_rows)}")
    by_reason = Counter(skip_category(r["reason"]) for r in skipped_rows)
    m = {"format": FORMAT,
         "source": {"kind": job.src.kind, "root": str(job.src.root), "fingerprint": job.src_fp},
         "classes": list(job.src.classes),
         "label_kind": getattr(job.src, "label_kind", "single"),
         "splits": splits,
         "config": job.cfg.model_dump(mode="json"),
         "skipped": {"count": len(skipped_rows), "by_reason": dict(by_reason.most_common())},
         "fingerprint": job.fp, "identity": job.ident}
    return m, skipped_rows


def finish_folder(job: ShardJob, states: States) -> dict[str, Any]:
    """Write skipped.jsonl, config.yaml and (last) manifest.json of the shard folder; its resume state goes."""
    manifest, skipped_rows = assemble_manifest(job, states, job.dups, job.found)
    atomic_write_text(job.out / SKIPPED, "".join(json.dumps(r, sort_keys=True) + "\n" for r in skipped_rows))
    save_config(job.cfg, job.out / "config.yaml")
    atomic_write_json(job.out / MANIFEST, manifest)  # last: its presence means the job is complete
    shutil.rmtree(job.out / STATE_DIR, ignore_errors=True)
    return manifest
