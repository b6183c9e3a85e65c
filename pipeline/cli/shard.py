"""``vgg shard``, ``vgg stats`` and ``vgg inspect``: thin wrappers over the shard stage (paper 3.1)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.options import stage_command
from pipeline.errors import UserError
from pipeline.results import ShardResult, StatsResult
from pipeline.shards.config import ShardConfig, StatsConfig
from pipeline.signals import stop_on_signals


@stage_command(ShardConfig, arguments=["source", "out"], aliases={"splits": "--split"})
def shard(
    cfg: ShardConfig,
    devkit: Annotated[str | None, typer.Option(help="ILSVRC: devkit folder or ILSVRC2012_devkit_t12.tar.gz "
                                                       "(val labels); = --set source_options.devkit=...")] = None,
) -> ShardResult:
    """Write an image collection as WebDataset shards ({split}-000000.tar) with manifest.json.

    Resumes after a kill, does nothing when the shards are up to date, refuses a folder of another
    source or config unless --overwrite. Unusable files are skipped with reasons in skipped.jsonl.
    """
    from pipeline.shards import run_shard

    if devkit:
        cfg = cfg.model_copy(update={"source_options": {**cfg.source_options, "devkit": devkit}})
    with stop_on_signals():  # SIGTERM / SIGINT: stop at once; complete shards stay, manifest.json is not written
        return run_shard(cfg)


@stage_command(StatsConfig, arguments=["shards"])
def stats(cfg: StatsConfig) -> StatsResult:
    """Mean RGB, RGB covariance and its eigen-decomposition (0-255 scale), stored in manifest.json."""
    from pipeline.shards import run_stats

    return run_stats(cfg)


def inspect(
    path: Annotated[str, typer.Argument(help="shard folder, features .h5 file or checkpoint .pt")],
    samples: Annotated[int, typer.Option(help="samples to show (shard folders)")] = 3,
    split: Annotated[str | None, typer.Option(help="split whose samples to show")] = None,
) -> None:
    """Summarise a shard folder (manifest + a few samples), a feature store or a checkpoint."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"not found: {p}")
    if p.is_dir():
        typer.echo(_describe_shards(p, samples, split))
    elif p.suffix in (".h5", ".hdf5"):
        from pipeline.features.store import summarise_store

        typer.echo(summarise_store(p))
    elif p.suffix in (".pt", ".pth"):
        from pipeline.models import load_checkpoint

        ck = load_checkpoint(p)
        typer.echo(json.dumps({"model": ck.get("model"), "meta": ck.get("meta", {}),
                               "keys": sorted(k for k in ck if k != "state_dict")}, indent=2, default=str))
    else:
        raise UserError(f"{p}: not a shard folder, .h5 feature store or .pt checkpoint")


def _describe_shards(path: Path, samples: int = 3, split: str | None = None) -> str:
    """Manifest summary (source, classes, splits, skips, stats) and the first ``samples`` samples."""
    from pipeline.shards.reader import iter_samples, read_manifest

    m = read_manifest(path)
    src = m["source"]
    lines = [
        f"{path}: {m['format']}, fingerprint {m['fingerprint']}",
        f"source: {src['kind']} {src['root']} (fingerprint {src['fingerprint']})",
        f"classes: {len(m['classes'])} ({', '.join(m['classes'][:8])}{', ...' if len(m['classes']) > 8 else ''})",
        f"max_side {m['config'].get('max_side')}, quality {m['config'].get('quality')}, seed {m['config'].get('seed')}",
    ]
    for name, sp in m["splits"].items():
        size = sum(s["bytes"] for s in sp["shards"])
        empty = [c for c, n in sp["per_class"].items() if n == 0]
        counts = list(sp["per_class"].values())
        lines.append(f"split {name}: {sp['count']} samples, {len(sp['shards'])} shards, {size / 1e6:.1f} MB, "
                     f"per class {min(counts, default=0)}..{max(counts, default=0)}"
                     + (f", {len(empty)} empty classes" if empty else ""))
    sk = m["skipped"]
    lines.append(f"skipped: {sk['count']}" + "".join(f"\n  {n} {r}" for r, n in sk["by_reason"].items()))
    st = m.get("stats")
    if st:
        lines.append(f"stats ({st.get('split', 'train')}, {st['images']} images): mean RGB "
                     f"{[round(v, 2) for v in st['mean']]}, eigval {[round(v, 3) for v in st['eigval']]}")
    else:
        lines.append("stats: none (run `vgg stats`)")
    show = split or ("train" if "train" in m["splits"] else next(iter(m["splits"]), None))
    if samples > 0 and show is not None:
        lines.append(f"first {samples} samples of {show}:")
        for s in itertools.islice(iter_samples(path, show), samples):
            meta = dict(s["json"])
            boxes = meta.pop("boxes", None)
            lines.append(f"  {s['__key__']}: cls {s['cls']}, {len(s['jpg'])} bytes jpg"
                         f"{f', {len(boxes)} boxes' if boxes else ''}, {json.dumps(meta, sort_keys=True)}")
    return "\n".join(lines)


def register(app: typer.Typer) -> None:
    app.command("shard")(shard)
    app.command("stats")(stats)
    app.command("inspect")(inspect)
