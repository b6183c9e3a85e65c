"""Fixtures of the localisation tests (builders in tests/helpers/localise.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.sources.voc import VOC_CLASSES
from tests.helpers.localise import save_classifier, write_voc_tree


@pytest.fixture(scope="session")
def voc_tree(tmp_path_factory) -> Path:
    return write_voc_tree(tmp_path_factory.mktemp("voc"), n=6)


@pytest.fixture(scope="session")
def voc_classifier(tmp_path_factory) -> Path:
    return save_classifier(tmp_path_factory.mktemp("cls") / "cls.pt", VOC_CLASSES)
