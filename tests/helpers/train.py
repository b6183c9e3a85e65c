"""Real shard folders for the training tests, built from the shipped Fashion-MNIST images.

Written with webdataset's TarWriter in the agreed format (docs/formats.md section 6): samples
``__key__``, ``jpg`` (RGB JPEG), ``cls``, ``json``; ``manifest.json`` with classes, split counts,
shard list (count, bytes, sha256), fingerprint and the RGB statistics computed with numpy on the
stored pixels. The tests control the shard layout (uneven shards, a fixed order) which the
equivalence and data-position tests need.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import webdataset as wds
from PIL import Image

from pipeline.io import atomic_write_json, fingerprint, sha256_file
from pipeline.shipped.fashion_mnist import CLASSES, load_split

Sample = tuple[str, bytes, int]  # key, jpeg bytes, class


def fmnist_samples(split: str, per_class: int, start: int = 0, quality: int = 90) -> list[Sample]:
    """The first ``per_class`` images of each class (after ``start`` per class) as RGB JPEG samples, file order."""
    x, y = load_split(split)
    picked = np.sort(np.concatenate([np.flatnonzero(y == c)[start:start + per_class] for c in range(len(CLASSES))]))
    out = []
    for i in picked:
        buf = io.BytesIO()
        Image.fromarray(x[i], "L").convert("RGB").save(buf, format="JPEG", quality=quality)
        out.append((f"{split}_{i:05d}", buf.getvalue(), int(y[i])))
    return out


def _stats(samples: list[Sample]) -> dict[str, Any]:
    px = np.concatenate([np.asarray(Image.open(io.BytesIO(b)).convert("RGB"), np.float64).reshape(-1, 3)
                         for _, b, _ in samples])
    mean = px.mean(0)
    cov = np.cov(px, rowvar=False, bias=True)
    val, vec = np.linalg.eigh(cov)
    order = np.argsort(val)[::-1]
    return {"mean": mean.tolist(), "cov": cov.tolist(), "eigval": val[order].tolist(),
            "eigvec": vec[:, order].tolist(), "images": len(samples), "pixels": int(px.shape[0])}


def write_shards(root: Path, splits: dict[str, list[list[Sample]]], *, stats: bool = True,
                 source: str = "fashion-mnist") -> Path:
    """Write ``{split}-{i:06d}.tar`` shards (one list of samples per shard) and ``manifest.json``."""
    root.mkdir(parents=True, exist_ok=True)
    man: dict[str, Any] = {
        "format": "vgg-shards/1",
        "source": {"kind": "imagefolder", "root": source, "fingerprint": source},
        "classes": list(CLASSES),
        "splits": {},
        "config": {"max_side": 512},
        "skipped": {"count": 0, "by_reason": {}},
    }
    for split, shards in splits.items():
        entries, per_class = [], {c: 0 for c in CLASSES}
        for i, samples in enumerate(shards):
            name = f"{split}-{i:06d}.tar"
            with wds.TarWriter(str(root / name)) as tw:
                for key, jpg, cls in samples:
                    tw.write({"__key__": key, "jpg": jpg, "cls": cls,
                              "json": {"path": f"{CLASSES[cls]}/{key}.png", "size": [28, 28], "class": CLASSES[cls]}})
                    per_class[CLASSES[cls]] += 1
            entries.append({"name": name, "count": len(samples), "bytes": (root / name).stat().st_size,
                            "sha256": sha256_file(root / name)})
        man["splits"][split] = {"count": sum(e["count"] for e in entries), "per_class": per_class, "shards": entries}
    man["fingerprint"] = fingerprint([source, json.dumps(man["splits"], sort_keys=True)])
    if stats and "train" in splits:
        man["stats"] = _stats([s for shard in splits["train"] for s in shard])
    atomic_write_json(root / "manifest.json", man)
    return root


def chunks(samples: list[Sample], sizes: list[int]) -> list[list[Sample]]:
    """Split ``samples`` into consecutive shards of the given sizes."""
    out, i = [], 0
    for n in sizes:
        out.append(samples[i:i + n])
        i += n
    assert i == len(samples), (i, len(samples))
    return out


def tiny_config(shards: Path, out: Path, **over: Any) -> dict[str, Any]:
    """A config dict for a tiny net on 32x32 crops of Fashion-MNIST (fast on two cores)."""
    cfg: dict[str, Any] = {
        "out": str(out),
        "model": {"config": "A", "num_classes": 10, "width": 0.125, "fc_width": 64, "crop": 32, "dropout": 0.0},
        "data": {"shards": str(shards), "scale": {"s_min": 32, "s_max": 40}, "workers": 0, "shuffle_buffer": 64},
        "optim": {"lr": 0.003, "batch_size": 16},
        "schedule": {"max_epochs": 2},
        "init": {"method": "glorot"},
        "runtime": {"bf16": False, "channels_last": False, "threads": 1},
        "checkpoint_every": 0,
        "log_every": 2,
    }
    for k, v in over.items():
        d = cfg
        keys = k.split(".")
        for kk in keys[:-1]:
            d = d.setdefault(kk, {})
        d[keys[-1]] = v
    return cfg
