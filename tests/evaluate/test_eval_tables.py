"""Paper-format tables and the posteriors file, on posteriors of a real classifier (sklearn digits)."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from sklearn.datasets import load_digits

from pipeline.errors import UserError
from pipeline.evaluate import Posteriors, load_posteriors, merge_posteriors, to_csv, to_markdown
from pipeline.evaluate.tables import build_rows, format_train_scale, net_label


@pytest.fixture(scope="module")
def post() -> Posteriors:
    """Two 'nets' (nearest-centroid classifiers on different pixels of scikit-learn's digits, soft-maxed
    at several temperatures) at two 'scales', both methods."""
    x, y = load_digits(return_X_y=True)
    arrays = {}
    for net, cols in enumerate((slice(0, 40), slice(24, 64))):
        centroids = np.stack([x[:400, cols][y[:400] == c].mean(0) for c in range(10)])
        dist = ((x[400:700, cols, None] - centroids.T[None]) ** 2).sum(1)  # 300 x 10
        for k, (m, q) in enumerate((("dense", 32), ("dense", 40), ("multicrop", 32), ("multicrop", 40))):
            z = -dist / (200.0 * (k + 1))
            p = np.exp(z - z.max(1, keepdims=True))
            arrays[(net, m, q)] = (p / p.sum(1, keepdims=True)).astype(np.float32)
    nets = [{"label": "A", "train_scale": {"s_min": 36, "s_max": 36}},
            {"label": "B", "train_scale": {"s_min": 32, "s_max": 48}}]
    return Posteriors(ids=[f"img{i}" for i in range(300)], labels=y[400:700], classes=[str(c) for c in range(10)],
                      nets=nets, arrays=arrays, data={"split": "val"})


def test_labels_of_scales_and_nets():
    assert format_train_scale({"s_min": 256, "s_max": 256}) == "256"
    assert format_train_scale({"s_min": 256, "s_max": 512}) == "[256;512]"
    assert format_train_scale(None) == "-"
    assert net_label({"label": "D", "train_scale": {"s_min": 256, "s_max": 512}}, [256, 384, 512]) == \
        "(D/[256;512]/256,384,512)"


def test_rows_markdown_and_csv(post):
    rows = build_rows(post, ["dense", "multicrop"])
    # per net: 2 single-scale + 1 multi-scale row per method, and the combination; then 3 fusion rows
    assert len(rows) == 2 * (3 + 3 + 1) + 3
    assert [r["method"] for r in rows[-3:]] == ["dense", "multi-crop", "multi-crop & dense"]
    assert rows[-1]["config"] == "(A/36/32,40), (B/[32;48]/32,40)"
    parsed = list(csv.DictReader(io.StringIO(to_csv(rows))))
    assert len(parsed) == len(rows) and float(parsed[0]["top1_error_pct"]) == rows[0]["top1_error_pct"]
    md = to_markdown(rows, "Table")
    assert 5 < rows[0]["top1_error_pct"] < 60  # a real, imperfect classifier
    assert md.count("\n| ") == len(rows) + 1 and "| A | 36 | 32,40 | dense |" in md


def test_save_load_merge_round_trip(post, tmp_path):
    post.save(tmp_path / "p.npz")
    back = load_posteriors(tmp_path / "p.npz")
    assert back.ids == post.ids and back.nets == post.nets and sorted(back.arrays) == sorted(post.arrays)
    np.testing.assert_array_equal(back.select("both"), post.select("both"))
    half = tmp_path / "h.npz"
    post.save(half, dtype="float16")
    np.testing.assert_allclose(load_posteriors(half).select("dense"), post.select("dense"), atol=1e-3)
    # the same images in another order merge by id
    perm = np.random.default_rng(0).permutation(300)
    shuffled = Posteriors(ids=[post.ids[i] for i in perm], labels=post.labels[perm], classes=post.classes,
                          nets=post.nets[:1], arrays={(0, m, q): a[perm] for (n, m, q), a in post.arrays.items()
                                                      if n == 0})
    merged = merge_posteriors([post, shuffled])
    np.testing.assert_array_equal(merged.select("dense", nets=[2]), post.select("dense", nets=[0]))
    other = Posteriors(ids=[f"x{i}" for i in range(300)], labels=post.labels, classes=post.classes, nets=post.nets,
                       arrays=post.arrays)
    with pytest.raises(UserError, match="different images"):
        merge_posteriors([post, other])
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="cannot read posteriors"):
        load_posteriors(tmp_path / "bad.npz")
