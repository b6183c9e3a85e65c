"""Fixtures of the shard tests: a small Fashion-MNIST ImageFolder tree (shipped data)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def fm_tree(tmp_path_factory):
    """Fashion-MNIST as an ImageFolder tree: 20 train and 5 val PNGs per class (250 images)."""
    from pipeline.shipped.fashion_mnist import prepare_fashion_mnist

    return prepare_fashion_mnist(tmp_path_factory.mktemp("fm") / "fashion", 20, 5)
