"""Fixtures of the localisation tests (builders in loc_fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from loc_fixtures import save_classifier, write_voc_tree

from pipeline.sources.voc import VOC_CLASSES


@pytest.fixture(scope="session")
def voc_tree(tmp_path_factory) -> Path:
    return write_voc_tree(tmp_path_factory.mktemp("voc"), n=6)


@pytest.fixture(scope="session")
def voc_classifier(tmp_path_factory) -> Path:
    return save_classifier(tmp_path_factory.mktemp("cls") / "cls.pt", VOC_CLASSES)
