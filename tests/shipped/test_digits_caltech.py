"""The Caltech-256-style digits tree: exact layout, every digit once, deterministic, real content."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from pipeline.errors import UserError
from pipeline.shipped.digits_caltech import CALTECH_DIR, DIGIT_NAMES, prepare_digits_caltech


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return prepare_digits_caltech(tmp_path_factory.mktemp("dc") / "digits", size=32)


def test_layout_is_caltech256(tree):
    root = tree / CALTECH_DIR
    folders = sorted(p.name for p in root.iterdir())
    assert folders == [f"{i + 1:03d}.{n}" for i, n in enumerate(DIGIT_NAMES)]
    target = load_digits().target
    for i, folder in enumerate(folders):
        files = sorted(p.name for p in (root / folder).iterdir())
        assert all(re.fullmatch(rf"{i + 1:03d}_\d{{4}}\.jpg", f) for f in files)
        assert files == [f"{i + 1:03d}_{k:04d}.jpg" for k in range(1, len(files) + 1)]  # numbered from 0001
        assert len(files) == (target == i).sum()  # every digit of the class, once
    assert (tree / ".prepared.json").is_file()


def test_images_are_rgb_jpegs_with_the_digit(tree):
    img = Image.open(tree / CALTECH_DIR / "004.three" / "004_0001.jpg")
    assert img.format == "JPEG" and img.mode == "RGB" and img.size == (32, 32)
    arr = np.asarray(img.convert("L"), dtype=np.float32)
    # the stroke (brightness 160-255) stands above the dim background (< 60 + JPEG noise)
    assert arr.max() > 120 and np.percentile(arr, 30) < 70
    # position and scale vary across images: the centroid of bright pixels moves
    cents = []
    for k in range(1, 21):
        a = np.asarray(Image.open(tree / CALTECH_DIR / "002.one" / f"002_{k:04d}.jpg").convert("L"), dtype=np.float32)
        ys, xs = np.nonzero(a > 120)
        cents.append((ys.mean(), xs.mean()))
    assert np.std(np.array(cents), axis=0).max() > 1.5


def test_deterministic_and_idempotent(tree, tmp_path):
    again = prepare_digits_caltech(tmp_path / "again", size=32)
    for f in sorted((tree / CALTECH_DIR).rglob("*.jpg"))[::97]:
        assert (again / f.relative_to(tree)).read_bytes() == f.read_bytes()
    assert prepare_digits_caltech(tree, size=32) == tree  # a finished tree is reused
    with pytest.raises(UserError, match="other parameters"):
        prepare_digits_caltech(tree, size=48)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    with pytest.raises(UserError, match="not a prepared"):
        prepare_digits_caltech(tmp_path / "busy")


def test_caltech_reader_reads_it(tree):
    from pipeline.sources import open_source

    src = open_source(tree / CALTECH_DIR, "auto")
    assert src.kind == "caltech256"
    assert len(src.classes) == 10
    recs = [r for s in src.splits() for r in src.records(s)]
    assert len(recs) == 1797
    assert np.bincount([r.label for r in recs]).tolist() == np.bincount(load_digits().target).tolist()


def _bright_extent(arr: np.ndarray) -> int:
    ys, xs = np.nonzero(arr > 120)
    return int(max(ys.max() - ys.min(), xs.max() - xs.min())) + 1


def test_height_range_sets_the_digit_size():
    from pipeline.shipped.digits_caltech import jittered_digit

    glyphs = load_digits().images[:40]
    small = [_bright_extent(jittered_digit(g, np.random.default_rng(i), 64, (0.4, 0.6), 0.0))
             for i, g in enumerate(glyphs)]
    large = [_bright_extent(jittered_digit(g, np.random.default_rng(i), 64, (0.8, 0.9), 0.0))
             for i, g in enumerate(glyphs)]
    # unrotated, the stroke lies inside the glyph's height x height square (bicubic overshoot: +1 px)
    assert max(small) <= round(0.6 * 64) + 1 and max(large) <= round(0.9 * 64) + 1
    assert min(large) > np.median(small)  # a larger range draws larger digits, image by image


def test_height_range_is_recorded_and_checked(tree, tmp_path):
    from pipeline.io import read_json

    assert read_json(tree / ".prepared.json")["height_range"] == [0.4, 0.6]  # the default (data/README.md)
    with pytest.raises(UserError, match="other parameters"):
        prepare_digits_caltech(tree, size=32, height_range=(0.45, 0.85))
    with pytest.raises(UserError, match="height_range"):
        prepare_digits_caltech(tmp_path / "bad", height_range=(0.7, 0.5))
