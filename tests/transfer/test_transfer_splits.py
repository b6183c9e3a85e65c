"""Caltech / generic splits: sizes, disjointness, determinism, saving and reloading, too-small classes."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

from pipeline.errors import UserError
from pipeline.transfer.splits import load_splits, make_splits, save_splits


@pytest.fixture(scope="module")
def labels():
    return load_digits().target.astype(np.int64)  # 174 to 183 images per class: real class counts


CLASSES = [str(c) for c in range(10)]


def test_caltech101_counts_and_disjointness(labels):
    splits = make_splits(labels, CLASSES, 30, 50, n_splits=3, seed=0, val_fraction=0.2)
    assert len(splits) == 3
    for s in splits:
        for c in range(10):
            assert (labels[s.train] == c).sum() == 30
            assert (labels[s.val] == c).sum() == 6  # 20% of 30
            assert (labels[s.fit] == c).sum() == 24
            assert (labels[s.test] == c).sum() == 50
        assert not set(s.train) & set(s.test)
        assert set(s.val) | set(s.fit) == set(s.train) and not set(s.val) & set(s.fit)
    assert not np.array_equal(splits[0].train, splits[1].train)  # three different random splits


def test_caltech256_rest_for_test_and_up_to_50(labels):
    s = make_splits(labels, CLASSES, 60, None, n_splits=1)[0]
    for c in range(10):
        assert (labels[s.train] == c).sum() == 60
        assert (labels[s.test] == c).sum() == (labels == c).sum() - 60  # all the rest
    # C101's "up to 50": a class with fewer left gives them all
    few = np.concatenate([labels, np.full(40, 10)])  # class 10 has 40 images: 30 train, 10 test
    s = make_splits(few, CLASSES + ["ten"], 30, 50, n_splits=1)[0]
    assert (few[s.test] == 10).sum() == 10 and (few[s.test] == 0).sum() == 50


def test_determinism_and_seed(labels):
    a = make_splits(labels, CLASSES, 30, 50, seed=3)
    b = make_splits(labels, CLASSES, 30, 50, seed=3)
    c = make_splits(labels, CLASSES, 30, 50, seed=4)
    for x, y in zip(a, b, strict=False):
        assert all(np.array_equal(getattr(x, f), getattr(y, f)) for f in ("train", "val", "fit", "test"))
    assert not np.array_equal(a[0].train, c[0].train)


def test_unknown_labels_never_used(labels):
    lab = labels.copy()
    lab[::7] = -1
    for s in make_splits(lab, CLASSES, 30, None, n_splits=2):
        assert (lab[np.concatenate([s.train, s.test])] >= 0).all()


def test_separate_test_set(labels):
    train_lab, test_lab = labels[:1000], labels[1000:]
    s = make_splits(train_lab, CLASSES, None, 20, n_splits=1, test_labels=test_lab)[0]
    assert len(s.train) == 1000 and (s.test >= 1000).all()
    for c in range(10):
        assert (labels[s.test] == c).sum() == 20


def test_too_small_classes_named(labels):
    lab = labels.copy()
    lab[np.flatnonzero(lab == 7)[25:]] = -1  # class 7 keeps 25 images
    with pytest.raises(UserError, match=r"class counts too small.*'7' has 25"):
        make_splits(lab, CLASSES, 30, 50)
    with pytest.raises(UserError, match="train_per_class"):
        make_splits(labels, CLASSES, None, 50)
    with pytest.raises(UserError, match="val_fraction"):
        make_splits(labels, CLASSES, 2, 50, val_fraction=0.2)  # 0 of 2 images for validation


def test_save_and_reload(tmp_path, labels):
    ids = [f"img{i:05d}" for i in range(len(labels))]
    splits = make_splits(labels, CLASSES, 30, 50, seed=1)
    save_splits(tmp_path / "splits.json", splits, ids, {"protocol": "caltech101"})
    # reload against a store holding the same images in another order
    perm = np.random.default_rng(0).permutation(len(ids))
    ids2 = [ids[i] for i in perm]
    back, meta = load_splits(tmp_path / "splits.json", ids2)
    assert meta["protocol"] == "caltech101"
    for a, b in zip(splits, back, strict=False):
        for f in ("train", "val", "fit", "test"):
            assert sorted(ids[i] for i in getattr(a, f)) == sorted(ids2[i] for i in getattr(b, f))
    with pytest.raises(UserError, match="not in the store"):
        load_splits(tmp_path / "splits.json", ids[:-100])
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(UserError, match="not a saved transfer split"):
        load_splits(tmp_path / "bad.json", ids)
