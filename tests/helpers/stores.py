"""Helpers of the store / transfer / checkpoint fault tests: the CLI run in-process or as a
subprocess, a real small tmpfs, small nets and real images (scikit-learn's sample photos)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

from pipeline.models import build_model, init_weights, save_checkpoint

REPO = Path(__file__).resolve().parents[2]
#: a small net: config A at width 1/8, crop 32, FC 64
SMALL = dict(config="A", width=0.125, crop=32, fc_width=64, num_classes=10)
NORM = {"mean": [120.0, 115.0, 105.0], "std": [60.0, 60.0, 60.0]}
SCALES = "32,48"


def make_checkpoint(path: Path, seed: int = 0) -> Path:
    model = init_weights(build_model(**SMALL), "glorot", seed=seed)
    save_checkpoint(path, model, meta={"normalization": NORM, "train_scale": {"s_min": 32, "s_max": 48}})
    return path


def photo_crops(photos: list[np.ndarray], n: int, seed: int = 0) -> list[Image.Image]:
    """``n`` small crops (48-96 px) of the two sample photos."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        arr = photos[i % 2]
        h, w = int(rng.integers(48, 97)), int(rng.integers(48, 97))
        y, x = int(rng.integers(0, arr.shape[0] - h)), int(rng.integers(0, arr.shape[1] - w))
        out.append(Image.fromarray(arr[y:y + h, x:x + w]))
    return out


def image_folder(root: Path, photos: list[np.ndarray], n: int = 8) -> Path:
    """An ImageFolder tree of ``n`` JPEG crops in two classes."""
    for i, img in enumerate(photo_crops(photos, n)):
        d = root / ("china" if i % 2 == 0 else "flower")
        d.mkdir(parents=True, exist_ok=True)
        img.save(d / f"{i:03d}.jpg", quality=90)
    return root


def run_main(args: list, capfd) -> tuple[int, str]:
    """``vgg ARGS`` in this process through the package's ``main``: (exit code, stdout + stderr)."""
    from pipeline.cli import main

    capfd.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    cap = capfd.readouterr()
    return code, cap.out + cap.err


def run_subprocess(args: list, timeout: int = 600) -> tuple[int, str]:
    """``python -m pipeline ARGS`` in a fresh process (a crash shows as a negative code)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "pipeline", *map(str, args)], capture_output=True, text=True,
                       env=env, timeout=timeout, cwd=REPO, check=False)
    return p.returncode, p.stdout + p.stderr


def assert_one_line_error(code: int, text: str, *needles: str) -> str:
    """Exit code 2, no traceback, exactly one ``error: ...`` line holding every needle; returns that line."""
    assert code == 2, f"exit code {code}:\n{text}"
    assert "Traceback" not in text, text
    assert "Exception ignored" not in text, text
    errors = [line for line in text.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, text
    for n in needles:
        assert n in errors[0], f"{n!r} not in {errors[0]!r}"
    return errors[0]


@contextmanager
def tmpfs(where: Path, size: str, read_only: bool = False) -> Iterator[Path]:
    """A real tmpfs of ``size`` (read-only if asked) mounted at ``where`` (skips the test when mounting is not
    permitted)."""
    import pytest

    where.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        pytest.skip("no mount command on this machine")
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ("ro," if read_only else "") + f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root or CAP_SYS_ADMIN): {r.stderr.strip()[:200]}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill_disk(folder: Path, leave: int = 0) -> Path:
    """Fill the file system of ``folder`` with one file until at most ``leave`` bytes stay free."""
    filler = folder / f"filler-{uuid.uuid4().hex[:8]}"
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    with open(filler, "wb") as fh:
        todo = max(0, free - leave)
        block = b"\0" * (1 << 16)
        try:
            while todo > 0:
                todo -= fh.write(block[:min(len(block), todo)])
            fh.flush()
        except OSError:  # already full
            pass
    return filler


def flip_bit_in_chunk(store: Path, name: str, chunk: int = 0, byte: int = 17) -> None:
    """Flip one bit inside a stored chunk of dataset ``name`` (the file's own bytes, as a disk would)."""
    with h5py.File(store, "r") as f:
        info = f[name].id.get_chunk_info(chunk)
        offset = info.byte_offset + min(byte, info.size - 5)
    with open(store, "r+b") as fh:
        fh.seek(offset)
        b = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([b[0] ^ 0x08]))


def write_store(path: Path, ids: list[str], labels: np.ndarray, classes: list[str], blocks: list[np.ndarray],
                scales: list[int]) -> Path:
    """A complete one-net store written through the store's own writer: ``blocks[s]`` is (N, D) at ``scales[s]``."""
    from pipeline.features.store import FORMAT, StoreLayout, StoreWriter, create_store

    labels = np.asarray(labels)
    layout = StoreLayout(ids=list(ids), labels=labels, label_kind="multi" if labels.ndim == 2 else "single",
                         classes=list(classes), dims=[int(blocks[0].shape[1])], scales=list(scales),
                         provenance={"checkpoints": [], "data": {"path": "", "kind": "test", "split": "all"}},
                         identity={"format": FORMAT, "test": str(path)})
    create_store(path, layout)
    w = StoreWriter(path)
    w.write_batch(0, [np.stack(blocks, axis=1).astype(np.float32)], np.ones(len(ids), dtype=bool))
    w.finalize()
    return path


def digits_store(path: Path, per_class: int = 12) -> Path:
    """scikit-learn's digits (10 classes, ``per_class`` each): "scales" 8 (the digit) and 4 (a pooled copy)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    rows = np.sort(np.concatenate([np.flatnonzero(d.target == c)[:per_class] for c in range(10)]))
    x = d.images[rows].astype(np.float32)
    coarse = x.reshape(len(x), 4, 2, 4, 2).mean(axis=(2, 4)).repeat(2, axis=1).repeat(2, axis=2)
    return write_store(path, [f"d{i:04d}" for i in rows], d.target[rows].astype(np.int64), [str(c) for c in range(10)],
                       [x.reshape(len(x), -1), coarse.reshape(len(x), -1)], [8, 4])
