"""Fixtures for the evaluate tests (helpers in tests/helpers/evaluate.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.evaluate import make_checkpoint, make_imagefolder


@pytest.fixture(scope="session")
def folder(tmp_path_factory, photos) -> Path:
    return make_imagefolder(tmp_path_factory.mktemp("data"), photos)


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ck") / "a.pt", seed=0)


@pytest.fixture(scope="session")
def ckpt_b(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ck") / "b.pt", seed=1, config="B",
                           train_scale={"s_min": 32, "s_max": 64})


@pytest.fixture(autouse=True)
def one_thread():
    """These tests run many small forward passes: one torch thread is fastest on a shared machine
    (two threads waiting on each other under load make small convolutions tens of times slower)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
