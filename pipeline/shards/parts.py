"""Sharding in parts on several machines, then one merge (paper 3.1, "Implementation details": the data-parallel
pre-processing of the training images): docs/shards.md "In parts, then one merge"."""

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
from pipeline.reuse import check_reusable, differences, identity
from pipeline.runtime import log
from pipeline.shards.config import parse_part
from pipeline.shards.writer import (
    STATE_DIR,
    ShardFolder,
    ShardJob,
    assemble_manifest,
    clean_stale,
    finish_folder,
    write_splits,
)

__all__ = ["PARTS_DIR", "PART_RECORD", "MERGE_STATE", "part_block", "part_dir", "write_shard_part", "plan_merge",
           "merge_shard_parts"]

PARTS_DIR = ".parts"  # the parts, until they are merged
PART_RECORD = "part.json"  # a part's record, written last
MERGE_STATE = "merge.json"  # the merge's move plan, written before the first shard is moved
_PART_RE = re.compile(r"^(\d+)-of-(\d+)$")


def part_block(length: int, shard_count: int, index: int, count: int) -> tuple[int, int]:
    """Plan positions ``[start, stop)`` of part ``index`` of ``count`` in a split of ``length``: whole
    blocks of ``shard_count`` positions, as evenly spread as whole blocks allow (a part may be empty)."""
    blocks = -(-length // shard_count)
    return (min(index * blocks // count * shard_count, length),
            min((index + 1) * blocks // count * shard_count, length))


def part_dir(out: str | os.PathLike[str], index: int, count: int) -> Path:
    return Path(out) / PARTS_DIR / f"{index}-of-{count}"


def _part_folder(out: Path, index: int, count: int) -> ShardFolder:
    """Part ``index`` of ``count`` as an output: repaired shard by shard, like the shard folder."""
    return ShardFolder(part_dir(out, index, count), record=PART_RECORD,
                       what=f"part {index}/{count} of shards of another source or config")


def _saved_merge(job: ShardJob) -> tuple[bool, dict[str, Any] | None]:
    """(whether ``out/.parts/merge.json`` exists, the move plan it holds when it plans a merge of this identity:
    the parts' shards may be moved already)."""
    path = job.out / PARTS_DIR / MERGE_STATE
    if not path.exists():
        return False, None
    try:
        saved = read_json(path)
    except ValueError:
        return True, None
    return True, saved if isinstance(saved, dict) and saved.get("identity") == job.ident else None


def _finished_elsewhere(job: ShardJob) -> dict[str, Any] | None:
    """The finished manifest of ``out`` when it has this run's identity and is whole (read only, no lock)."""
    folder = ShardFolder(job.out, cleans=False)  # no clean: the merge cleans, holding the folder's lock
    rec = folder.read()
    if rec is None or (not rec.finished and rec.identity == job.ident):
        return None  # nothing, or a one-process run's unfinished state that the merge replaces
    return rec.record if check_reusable(folder, job.ident, job.cfg.overwrite) == "reuse" else None


def write_shard_part(job: ShardJob) -> ShardResult:
    """Write part ``cfg.part`` ("i/n") of the shard folder into ``out/.parts/i-of-n`` (``nothing_to_do`` when the
    part is finished, being merged, or the merged folder is done)."""
    index, count = parse_part(job.cfg.part or "")
    spec = f"{index}/{count}"
    done = _finished_elsewhere(job)
    if done is not None:
        return job.result(job.out, done, part=spec)
    folder = _part_folder(job.out, index, count)
    folder.path.mkdir(parents=True, exist_ok=True)
    ident = identity(**job.ident, part=spec)
    with folder_lock(folder.path, f"part {spec} of shard folder {job.out}"):
        rec = folder.read()
        merging = _saved_merge(job)[1]
        if merging and merging.get("parts") == count and rec is not None and rec.finished and rec.identity == ident:
            log(f"part {spec}: being merged into {job.out}", job.cfg.progress)
            return job.result(folder.path, rec.record, part=spec)
        if check_reusable(folder, ident, job.cfg.overwrite) == "reuse":
            return job.result(folder.path, folder.recorded.record, part=spec)  # type: ignore[union-attr]
        folder.unmark()
        blocks = {b: part_block(len(p), job.cfg.shard_count, index, count) for b, p in job.plans.items()}
        plans = {b: p[slice(*blocks[b])] for b, p in job.plans.items()}
        states, resumed = write_splits(job, folder.path, ident, plans)
        found = sum(len(p) for p in plans.values())
        record, _ = assemble_manifest(job, states, {}, found)
        record.update(part=spec, blocks=blocks, states=states, identity=ident)
        atomic_write_json(folder.path / PART_RECORD, record)  # last: the part is finished
        shutil.rmtree(folder.path / STATE_DIR, ignore_errors=True)
    return job.result(folder.path, record, spec, found, resumed)


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


def plan_merge(job: ShardJob, count: int) -> dict[str, Any]:
    """Check every part and compute the moves (part shard -> global name) and the merged shard states; parts
    missing or unfinished, of another source or config, or damaged are a UserError."""
    out = job.out
    recs: list[dict[str, Any]] = []
    missing = []
    for i in range(count):
        folder, spec = _part_folder(out, i, count), f"{i}/{count}"
        rec = folder.read()
        if rec is None or not rec.finished:
            missing.append(spec)
            continue
        if rec.identity is None:
            raise UserError(f"cannot merge {out}: part {spec}: {rec.problem}; rerun it with --overwrite")
        if rec.identity != (want := identity(**job.ident, part=spec)):
            diff = "; ".join(differences(rec.identity, want, ShardFolder.labels))
            raise UserError(f"cannot merge {out}: part {spec} was written from another source or config "
                            f"({diff}); rerun it with --overwrite")
        if problems := folder.problems(True):
            raise UserError(f"cannot merge {out}: part {spec} is damaged ({problems[0]}); rerun it")
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


def merge_shard_parts(job: ShardJob) -> ShardResult:
    """Merge the finished parts in ``out/.parts`` into the shard folder ``out``: the result of a one-process run
    (``nothing_to_do`` when ``manifest.json`` is already there with this identity); parts missing, unfinished,
    damaged, of another source or config, or being written are a UserError."""
    out, parts = job.out, job.out / PARTS_DIR
    with folder_lock(out, f"shard folder {out}"):
        folder = ShardFolder(out)
        if check_reusable(folder, job.ident, job.cfg.overwrite) == "reuse":
            if (parts / MERGE_STATE).exists():  # killed after its manifest was written
                shutil.rmtree(parts, ignore_errors=True)
            return job.result(out, folder.recorded.record)  # type: ignore[union-attr]
        exists, saved = _saved_merge(job)
        if exists and saved is None:  # an unfinished merge of other parts
            if not job.cfg.overwrite:
                raise UserError(f"{parts} holds an unfinished merge of another source or config (or a damaged "
                                f"{MERGE_STATE}); {ShardFolder.hint}")
            folder.clean()
            (parts / MERGE_STATE).unlink()
        count = saved["parts"] if saved is not None else _part_count(out)
        with contextlib.ExitStack() as locks:
            for i in range(count):  # no part may be written while it is merged
                if (pdir := part_dir(out, i, count)).is_dir():
                    locks.enter_context(folder_lock(pdir, f"part {i}/{count} of shard folder {out}"))
            if saved is None:
                plan = plan_merge(job, count)
                folder.clean()  # every part checked: what a one-process run left in out is replaced
                atomic_write_json(parts / MERGE_STATE, plan)
            else:
                plan = saved
                clean_stale(out)
            _move(out, plan)
            log(f"merged {count} parts into {out}", job.cfg.progress)
            job.cfg = job.cfg.model_copy(update={"part": None, "merge": False})  # recorded as the one-process config
            manifest = finish_folder(job, plan["states"])
            shutil.rmtree(parts, ignore_errors=True)
    return job.result(out, manifest, found=job.found, resumed=saved is not None)
