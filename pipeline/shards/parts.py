"""Sharding in parts on several machines, then one merge (paper 3.1, "Implementation details": the
data-parallel pre-processing of the training images, spread over machines).

``run_shard`` with ``part="i/n"`` (CLI ``vgg shard SOURCE OUT --part i/n``) writes part i of n: of
every split's seeded, shuffled plan (the one a one-process run writes) it takes the contiguous
block of plan positions ``[b(i), b(i+1))`` with ``b(i) = (i * c // n) * shard_count`` (capped at
the split's length), where ``c`` is the number of ``shard_count``-sized blocks of the split. The
blocks are whole shards, so when nothing is skipped and no shard reaches ``shard_bytes`` the merged
shards are byte for byte those of a one-process run; in every case the merged samples, their
order, keys and labels are. A part is an ordinary resumable shard run
(:func:`pipeline.shards.writer._write_splits`) into its own hidden folder ``OUT/.parts/i-of-n/``,
under its own lock (``OUT/.parts/i-of-n/.lock``), so parts in other processes or on other machines
never wait for each other; its record ``part.json`` is written last and carries the identity of
the shard folder (source fingerprint + content config) plus the part spec.

``merge=True`` (``vgg shard SOURCE OUT --merge``) holds ``OUT/.lock`` and every part's lock, checks
that all n part records exist with this run's identity and every listed shard is present (a
one-line :class:`~pipeline.errors.UserError` names missing or other parts; nothing in ``OUT`` is
touched then), writes the deterministic move plan ``OUT/.parts/merge.json``, moves every part
shard into ``OUT/{split}-{NNNNNN}.tar`` in global order by rename (a merge killed midway is run
again: shards already moved are recognised by name and size), and writes ``skipped.jsonl``,
``config.yaml`` and, last, ``manifest.json``: the schema and ``identity`` of a one-process run,
so the reuse rule and every reader take it as one. ``OUT/.parts`` is then removed.

A finished part, a part whose merge is under way or done, and a merge whose ``manifest.json``
exists are all "nothing to do".
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.io import atomic_write_json, read_json
from pipeline.locks import folder_lock
from pipeline.results import ShardResult
from pipeline.reuse import Output, Recorded, check_reusable, differences, identity
from pipeline.runtime import log
from pipeline.shards.config import ShardConfig, parse_part
from pipeline.shards.writer import (
    STATE_DIR,
    ShardFolder,
    _clean_out,
    _clean_stale,
    _finish,
    _Job,
    _manifest,
    _open_job,
    _out_dir,
    _result,
    _write_splits,
)

__all__ = ["PARTS_DIR", "PART_RECORD", "MERGE_STATE", "parse_part", "part_block", "part_dir", "run_part",
           "run_merge"]

#: hidden subfolder of the shard folder holding the parts until they are merged
PARTS_DIR = ".parts"
#: a part's record, written last (its presence means the part is finished)
PART_RECORD = "part.json"
#: the merge's move plan, written before the first shard is moved
MERGE_STATE = "merge.json"
_PART_RE = re.compile(r"^(\d+)-of-(\d+)$")
_LABELS = ShardFolder.labels
_HINT = ShardFolder.hint


def part_block(length: int, shard_count: int, index: int, count: int) -> tuple[int, int]:
    """Plan positions ``[start, stop)`` of part ``index`` of ``count`` in a split of ``length``: whole
    blocks of ``shard_count`` positions, as evenly spread as whole blocks allow (a part may be empty)."""
    blocks = -(-length // shard_count)
    return (min(index * blocks // count * shard_count, length),
            min((index + 1) * blocks // count * shard_count, length))


def part_dir(out: str | os.PathLike[str], index: int, count: int) -> Path:
    """The folder part ``index`` of ``count`` writes: ``out/.parts/{index}-of-{count}``."""
    return Path(out) / PARTS_DIR / f"{index}-of-{count}"


def _present(folder: Path, names_bytes: list[tuple[str, int]]) -> list[str]:
    """Problems: listed shards missing from ``folder`` or of another size."""
    return [f"{n} is missing or of another size" for n, b in names_bytes
            if not ((folder / n).is_file() and (folder / n).stat().st_size == b)]


def _part_ident(job: _Job, spec: str) -> dict[str, Any]:
    return identity(**job.ident, part=spec)


def _read_part(pdir: Path) -> Recorded | None:
    """What a part folder records: ``part.json`` (finished) or its resume plan (unfinished); None: neither."""
    for path, finished in ((pdir / PART_RECORD, True), (pdir / STATE_DIR / "plan.json", False)):
        if path.exists():
            try:
                rec = read_json(path)
                ident = rec["identity"]
            except (ValueError, KeyError, TypeError):
                return Recorded(None, False, f"{path}: damaged part record")
            return Recorded(ident if isinstance(ident, dict) else None, finished, record=rec)
    return None


class _PartFolder(Output):
    """Part ``spec`` of a shard folder (``out/.parts/i-of-n``): repaired shard by shard, like the folder."""

    hint, labels, repairs = _HINT, _LABELS, True

    def __init__(self, pdir: Path, spec: str, rec: Recorded | None) -> None:
        super().__init__(pdir)
        self.rec, self.what = rec, f"part {spec} of shards of another source or config"

    def read(self) -> Recorded | None:
        return self.rec

    def problems(self, finished: bool) -> list[str]:
        return _present(self.path, _part_shards(self.rec.record)) if finished and self.rec else []

    def clean(self) -> None:
        _clean_out(self.path)
        (self.path / PART_RECORD).unlink(missing_ok=True)


def _part_shards(rec: dict[str, Any]) -> list[tuple[str, int]]:
    return [(s["name"], s["bytes"]) for states in rec["states"].values() for s in states if s["name"] is not None]


def _merge_started(out: Path, job: _Job, count: int) -> bool:
    """Whether ``out/.parts/merge.json`` plans the merge of these parts (so their shards may be moved already)."""
    path = out / PARTS_DIR / MERGE_STATE
    try:
        rec = read_json(path) if path.exists() else None
    except ValueError:
        return False
    return isinstance(rec, dict) and rec.get("identity") == job.ident and rec.get("parts") == count


def _finished_elsewhere(out: Path, job: _Job, cfg: ShardConfig) -> dict[str, Any] | None:
    """The finished manifest of ``out`` when it has this run's identity and is whole (read only, no lock)."""
    folder = ShardFolder(out, cleans=False)  # no clean: the merge cleans, holding the folder's lock
    rec = folder.read()
    if rec is None or (not rec.finished and rec.identity == job.ident):
        return None  # nothing, or a one-process run's unfinished state that the merge replaces
    return rec.record if check_reusable(folder, job.ident, cfg.overwrite) == "reuse" else None


def run_part(cfg: ShardConfig) -> ShardResult:
    """Write part ``cfg.part`` ("i/n") of the shard folder ``cfg.out`` into ``out/.parts/i-of-n``.

    Returns:
        A :class:`ShardResult` whose ``out`` is the part folder and ``manifest`` the part record
        (``nothing_to_do`` when the part is finished, being merged, or the merged folder is done).
    Raises:
        UserError: a bad part spec, the part being written by another run, a part or shard folder
            of another source or config (unless ``cfg.overwrite``).
    """
    index, count = parse_part(cfg.part or "")
    spec = f"{index}/{count}"
    job = _open_job(cfg)
    out = _out_dir(cfg)
    done = _finished_elsewhere(out, job, cfg)
    if done is not None:
        res = ShardResult(out=out, manifest=done, nothing_to_do=True, detected=job.detected)
        log(f"part {spec}: {res.summary()}", cfg.progress)
        return res
    pdir = part_dir(out, index, count)
    pdir.mkdir(parents=True, exist_ok=True)
    ident = _part_ident(job, spec)
    with folder_lock(pdir, f"part {spec} of shard folder {out}"):
        rec = _read_part(pdir)
        if _merge_started(out, job, count) and rec is not None and rec.finished and rec.identity == ident:
            res = ShardResult(out=pdir, manifest=rec.record, nothing_to_do=True, detected=job.detected)
            log(f"part {spec}: being merged into {out}; nothing to do", cfg.progress)
            return res

        if check_reusable(_PartFolder(pdir, spec, rec), ident, cfg.overwrite) == "reuse":
            res = ShardResult(out=pdir, manifest=rec.record, nothing_to_do=True, detected=job.detected)  # type: ignore[union-attr]
            log(f"part {spec}: {res.summary()}", cfg.progress)
            return res
        (pdir / PART_RECORD).unlink(missing_ok=True)  # rewritten: not finished until then
        (pdir / STATE_DIR).mkdir(exist_ok=True)
        _clean_stale(pdir)
        atomic_write_json(pdir / STATE_DIR / "plan.json", {"fingerprint": job.fp, "identity": ident})
        blocks = {b: part_block(len(p), cfg.shard_count, index, count) for b, p in job.plans.items()}
        plans = {b: p[slice(*blocks[b])] for b, p in job.plans.items()}
        states, resumed = _write_splits(pdir, cfg, job.src, job.pairs, plans)
        record, _ = _manifest(job.src, job.src_fp, job.fp, cfg, job.pairs, states, {})
        found = sum(len(p) for p in plans.values())
        written = sum(sp["count"] for sp in record["splits"].values())
        if found != written + record["skipped"]["count"]:
            raise RuntimeError(f"part {spec}: reconciliation failed: found {found} != written {written} "
                               f"+ skipped {record['skipped']['count']}")
        record.update(part=spec, blocks=blocks, states=states, identity=ident)
        atomic_write_json(pdir / PART_RECORD, record)  # last: the part is finished
        shutil.rmtree(pdir / STATE_DIR, ignore_errors=True)
    res = ShardResult(out=pdir, manifest=record, resumed=resumed, written=written,
                      skipped=record["skipped"]["count"], found=found, detected=job.detected)
    log(f"part {spec}: {res.summary()}", cfg.progress)
    return res


def _part_count(out: Path) -> int:
    parts = out / PARTS_DIR
    counts = {int(m.group(2)) for p in (parts.iterdir() if parts.is_dir() else ())
              if p.is_dir() and (m := _PART_RE.match(p.name))}
    if not counts:
        raise UserError(f"no parts of {out} to merge (run vgg shard SOURCE {out} --part i/n for i = 0..n-1 first)")
    if len(counts) > 1:
        raise UserError(f"{out / PARTS_DIR} holds parts of runs with different part counts {sorted(counts)}; "
                        "remove the stale ones")
    return counts.pop()


def _plan_merge(out: Path, job: _Job, count: int) -> dict[str, Any]:
    """Check every part and compute the moves (part shard -> global name) and the merged shard states.

    Raises:
        UserError: parts missing or unfinished, of another source or config, or damaged.
    """
    recs: list[dict[str, Any]] = []
    missing = []
    for i in range(count):
        rec = _read_part(part_dir(out, i, count))
        if rec is None or not rec.finished:
            missing.append(f"{i}/{count}")
            continue
        if rec.identity is None:
            raise UserError(f"cannot merge {out}: part {i}/{count}: {rec.problem}; rerun it with --overwrite")
        want = _part_ident(job, f"{i}/{count}")
        if rec.identity != want:
            diff = "; ".join(differences(rec.identity, want, _LABELS))
            raise UserError(f"cannot merge {out}: part {i}/{count} was written from another source or config "
                            f"({diff}); rerun it with --overwrite")
        problems = _present(part_dir(out, i, count), _part_shards(rec.record))
        if problems:
            raise UserError(f"cannot merge {out}: part {i}/{count} is damaged ({problems[0]}); rerun it")
        recs.append(rec.record)
    if missing:
        raise UserError(f"cannot merge {out}: missing or unfinished part(s) {', '.join(missing)} "
                        f"(run vgg shard SOURCE {out} --part i/{count} for each)")
    moves: list[list[Any]] = []
    states: dict[str, list[dict[str, Any]]] = {}
    for _, dest in job.pairs:
        states[dest] = []
        for i, rec in enumerate(recs):
            for s in rec["states"][dest]:
                s = dict(s)
                if s["name"] is not None:
                    name = f"{dest}-{sum(1 for x in states[dest] if x['name'] is not None):06d}.tar"
                    moves.append([f"{i}-of-{count}/{s['name']}", name, s["bytes"]])
                    s["name"] = name
                states[dest].append(s)
    return {"identity": job.ident, "parts": count, "moves": moves, "states": states}


def _move(out: Path, plan: dict[str, Any]) -> None:
    """Rename every part shard to its global name (again after a kill: moved shards are recognised by size)."""
    parts = out / PARTS_DIR
    for src, name, nbytes in plan["moves"]:
        s, d = parts / src, out / name
        if s.is_file():
            os.replace(s, d)
        elif not (d.is_file() and d.stat().st_size == nbytes):
            raise UserError(f"cannot finish the merge into {out}: neither {d} nor {s} holds the shard; remove "
                            f"{parts} and write the parts again")


def run_merge(cfg: ShardConfig) -> ShardResult:
    """Merge the finished parts in ``cfg.out/.parts`` into the shard folder ``cfg.out``.

    Returns:
        The :class:`ShardResult` of the shard folder, as a one-process run returns it
        (``nothing_to_do`` when ``manifest.json`` is already there with this identity).
    Raises:
        UserError: no parts, missing, unfinished, damaged or other parts, a part still being
            written, a shard folder of another source or config (unless ``cfg.overwrite``).
    """
    job = _open_job(cfg)
    out = _out_dir(cfg)
    parts = out / PARTS_DIR
    with folder_lock(out, f"shard folder {out}"):
        folder = ShardFolder(out)
        state = check_reusable(folder, job.ident, cfg.overwrite)
        rec = folder.recorded
        if state == "reuse":
            if (parts / MERGE_STATE).exists():  # killed after its manifest was written
                shutil.rmtree(parts, ignore_errors=True)
            res = ShardResult(out=out, manifest=rec.record, nothing_to_do=True, detected=job.detected)  # type: ignore[union-attr]
            log(res.summary(), cfg.progress)
            return res
        saved = None
        if (parts / MERGE_STATE).exists():
            try:
                saved = read_json(parts / MERGE_STATE)
            except ValueError:
                saved = {}
            if not isinstance(saved, dict) or saved.get("identity") != job.ident:
                if not cfg.overwrite:
                    raise UserError(f"{parts} holds an unfinished merge of another source or config (or a damaged "
                                    f"{MERGE_STATE}); {_HINT}")
                _clean_out(out)
                (parts / MERGE_STATE).unlink()
                saved = None
        count = saved["parts"] if saved is not None else _part_count(out)
        with contextlib.ExitStack() as locks:
            for i in range(count):  # no part may be written while it is merged
                if (pdir := part_dir(out, i, count)).is_dir():
                    locks.enter_context(folder_lock(pdir, f"part {i}/{count} of shard folder {out}"))
            if saved is None:
                plan = _plan_merge(out, job, count)
                _clean_out(out)  # every part checked: what a one-process run left in out is replaced
                atomic_write_json(parts / MERGE_STATE, plan)
            else:
                plan = saved
                _clean_stale(out)
            _move(out, plan)
            final = cfg.model_copy(update={"part": None, "merge": False})  # recorded as the one-process config
            manifest = _finish(out, final, job.src, job.src_fp, job.fp, job.pairs, plan["states"], job.dups,
                               job.found)
            shutil.rmtree(parts, ignore_errors=True)
    log(f"merged {count} parts into {out}", cfg.progress)
    return _result(out, manifest, job, saved is not None, cfg.progress)
