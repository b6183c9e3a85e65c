"""``vgg inspect`` of a shard folder: a readable summary of its manifest and first samples (paper 3.1's input)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

__all__ = ["describe_shards"]


def describe_shards(path: Path, samples: int = 3, split: str | None = None) -> str:
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
