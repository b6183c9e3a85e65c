"""Outputs honour the umask (issue 14, point 5): ``tempfile`` creates 0600 files and 0700 folders,
which teammates sharing the outputs could not read; every output is created as the umask says."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pipeline.cli import main


@pytest.fixture
def umask():
    """Set the process umask for one test, restored afterwards."""
    old = os.umask(0o022)
    os.umask(old)

    def set_(mask: int) -> None:
        os.umask(mask)

    yield set_
    os.umask(old)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _vgg(*argv: object) -> None:
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    assert e.value.code == 0


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_cli_outputs_follow_the_umask(tmp_path, umask, mask):
    umask(mask)
    _vgg("prepare-data", "fashion-mnist", tmp_path / "fm", "--train-per-class", "2", "--val-per-class", "1")
    _vgg("shard", tmp_path / "fm", tmp_path / "s", "--workers", "1")
    files = [tmp_path / "s" / "manifest.json", tmp_path / "fm" / ".prepared.json", *(tmp_path / "s").glob("*.tar")]
    assert len(files) >= 4
    for f in files:
        assert _mode(f) == 0o666 & ~mask, (f, oct(_mode(f)))
    for d in (tmp_path / "fm", tmp_path / "s"):
        assert _mode(d) == 0o777 & ~mask, (d, oct(_mode(d)))


def test_atomic_writes_follow_the_umask(tmp_path, umask):
    from pipeline.io import atomic_path, atomic_write_json

    umask(0o022)
    atomic_write_json(tmp_path / "a.json", {"x": 1})
    with atomic_path(tmp_path / "b.bin") as tmp:
        tmp.write_bytes(b"x")
    assert _mode(tmp_path / "a.json") == _mode(tmp_path / "b.bin") == 0o644
    umask(0o077)
    atomic_write_json(tmp_path / "c.json", {"x": 1})
    assert _mode(tmp_path / "c.json") == 0o600
