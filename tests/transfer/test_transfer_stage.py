"""run_transfer end to end on real stores: Caltech / generic / VOC protocols, fusion, outputs, bad input."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.metrics import balanced_accuracy_score
from sklearn.svm import LinearSVC

from pipeline.errors import UserError
from pipeline.features.store import l2_normalise
from pipeline.io import sha256_file
from pipeline.transfer import TransferConfig, run_transfer
from pipeline.transfer.descriptors import load_descriptors, write_pixel_store
from pipeline.transfer.metrics import voc_map
from tests.helpers.transfer import digits_scales, digits_store, mosaic_pixels, write_store

GRID = [0.1, 1.0, 10.0]


@pytest.fixture(scope="module")
def digits_h5(tmp_path_factory):
    return digits_store(tmp_path_factory.mktemp("st") / "digits.h5")


@pytest.fixture(scope="module")
def digits_h5_b(tmp_path_factory):
    return digits_store(tmp_path_factory.mktemp("st") / "digits_b.h5", shift=1)


def _csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# ---------------------------------------------------------------- Caltech / generic
def test_caltech101_end_to_end(digits_h5, tmp_path):
    cfg = TransferConfig(stores=[str(digits_h5)], protocol="caltech101", out=str(tmp_path / "t"), c_grid=GRID)
    r = run_transfer(cfg)
    assert r["protocol"] == "caltech101" and r["metric"] == "mean class recall"
    vals = [s["value"] for s in r["splits"]]
    assert (
        len(vals) == 3 and r["mean"] == pytest.approx(np.mean(vals)) and r["std"] == pytest.approx(np.std(vals, ddof=1))
    )
    assert r["mean"] > 0.85  # raw 8x8 digits, 30 per class: a real classifier
    assert all(s["counts"] == {"train": 300, "val": 60, "test": 500} for s in r["splits"])
    assert all(s["C"] in GRID and len(s["val"]) == 3 for s in r["splits"]) and r["chosen_C"] == [
        s["C"] for s in r["splits"]
    ]
    assert list(r["per_class"]) == [str(c) for c in range(10)]
    assert r["descriptor"]["aggregate"] == "stack" and r["descriptor"]["dim"] == 128  # Caltech default: stack
    # the per-image decision values recompute the metric
    for s in r["splits"]:
        rows = _csv(tmp_path / "t" / "decisions" / f"split{s['index']}.csv")
        y = [int(x["label"]) for x in rows]
        scores = np.array([[float(x[f"score_{c}"]) for c in range(10)] for x in rows])
        assert balanced_accuracy_score(y, scores.argmax(1)) == pytest.approx(s["value"])
        assert [int(x["predicted"]) for x in rows] == list(scores.argmax(1))
    table = (tmp_path / "t" / "table.md").read_text()
    assert "| Method | Caltech-101 (mean class recall) |" in table and f"{100 * r['mean']:.1f} ± " in table
    assert (tmp_path / "t" / "config.yaml").is_file()
    assert json.loads((tmp_path / "t" / "transfer.json").read_text())["mean"] == r["mean"]
    # same config and stores: the saved result; saved splits reload to the same numbers
    assert run_transfer(cfg)["status"] == "exists"
    again = run_transfer(
        cfg.model_copy(
            update={"out": str(tmp_path / "u"), "splits_file": str(tmp_path / "t" / "splits.json"), "seed": 99}
        )
    )
    assert [s["value"] for s in again["splits"]] == vals


def test_caltech256_counts(digits_h5, tmp_path):
    r = run_transfer(TransferConfig(stores=[str(digits_h5)], protocol="caltech256", out=str(tmp_path), c_grid=[1.0],
                                    n_splits=1))
    assert r["splits"][0]["counts"] == {"train": 600, "val": 120, "test": 1797 - 600}
    assert r["std"] == 0.0


def test_generic_with_a_test_store_matches_linearsvc(tmp_path):
    d = load_digits()
    scales = digits_scales(d.images)
    ids = [f"d{i:04d}" for i in range(len(d.target))]
    cut = 1000
    tr = write_store(tmp_path / "train.h5", ids[:cut], d.target[:cut], [str(c) for c in range(10)],
                     [[s[:cut] for s in scales]], [8, 4])
    te = write_store(tmp_path / "test.h5", ids[cut:], d.target[cut:], [str(c) for c in range(10)],
                     [[s[cut:] for s in scales]], [8, 4])
    r = run_transfer(
        TransferConfig(
            stores=[str(tr)],
            test_stores=[str(te)],
            protocol="generic",
            out=str(tmp_path / "o"),
            c_grid=[1.0],
            val_fraction=0.0,
            n_splits=1,
            aggregate="avg",
        )
    )
    assert r["splits"][0]["counts"]["train"] == cut and r["splits"][0]["counts"]["test"] == len(ids) - cut
    # independent: sklearn's LinearSVC on the paper's descriptor (average over scales, L2-normalised)
    X = l2_normalise((scales[0] + scales[1]) / 2)
    ref = LinearSVC(C=1.0, tol=1e-8, max_iter=100000).fit(X[:cut], d.target[:cut]).predict(X[cut:])
    assert r["mean"] == pytest.approx(balanced_accuracy_score(d.target[cut:], ref), abs=0.005)


def test_aggregation_and_late_fusion(digits_h5, digits_h5_b, tmp_path):
    d = load_digits()
    a = digits_scales(d.images)
    b = digits_scales(np.roll(d.images, 1, axis=2))
    stack = load_descriptors([digits_h5], "stack").X
    assert np.allclose(stack, l2_normalise(np.hstack(a)), atol=1e-6)
    avg = load_descriptors([digits_h5], "avg").X
    assert np.allclose(avg, l2_normalise((a[0] + a[1]) / 2), atol=1e-6)
    one = load_descriptors([digits_h5], "stack", scales=[4]).X
    assert np.allclose(one, l2_normalise(a[1]), atol=1e-6)
    # late fusion: descriptors of the two stores stacked, then L2-normalised once (paper)
    fused = load_descriptors([digits_h5, digits_h5_b], "stack")
    assert fused.X.shape == (1797, 256)
    assert np.allclose(fused.X, l2_normalise(np.hstack(a + b)), atol=1e-6)
    per_net = load_descriptors([digits_h5, digits_h5_b], "stack", l2="net").X
    assert np.allclose(per_net, np.hstack([l2_normalise(np.hstack(a)), l2_normalise(np.hstack(b))]), atol=1e-6)
    r = run_transfer(TransferConfig(stores=[str(digits_h5), str(digits_h5_b)], protocol="caltech101", out=str(tmp_path),
                                    c_grid=[1.0], n_splits=1))
    assert r["descriptor"]["dim"] == 256 and len(r["stores"]) == 2 and r["method"] == "VGG Net-D & Net-D"


def test_bad_input(digits_h5, tmp_path):
    d = load_digits()
    ids = [f"d{i:04d}" for i in range(len(d.target))]
    nolab = write_store(tmp_path / "nolab.h5", ids, np.full(len(ids), -1), [str(c) for c in range(10)],
                        [digits_scales(d.images)], [8, 4])
    with pytest.raises(UserError, match="no labels"):
        run_transfer(TransferConfig(stores=[str(nolab)], protocol="caltech101", out=str(tmp_path / "a")))
    other = digits_store(tmp_path / "other.h5", n_per_class=40)
    with pytest.raises(UserError, match="different images"):
        run_transfer(
            TransferConfig(stores=[str(digits_h5), str(other)], protocol="caltech101", out=str(tmp_path / "b"))
        )
    with pytest.raises(UserError, match="class counts too small.*has 40"):
        run_transfer(TransferConfig(stores=[str(other)], protocol="caltech256", out=str(tmp_path / "c")))
    with pytest.raises(UserError, match="multi-label"):
        run_transfer(TransferConfig(stores=[str(digits_h5)], protocol="voc07", out=str(tmp_path / "d")))
    with pytest.raises(UserError, match="one per net"):
        run_transfer(TransferConfig(stores=[str(digits_h5)], test_stores=[str(other), str(other)], protocol="generic",
                                    out=str(tmp_path / "e")))
    with pytest.raises(UserError, match="feature store not found"):
        run_transfer(
            TransferConfig(stores=[str(tmp_path / "missing.h5")], protocol="caltech101", out=str(tmp_path / "f"))
        )
    assert not (tmp_path / "a" / "transfer.json").exists()


# ---------------------------------------------------------------- VOC
@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    from pipeline.shipped.voc_mosaics import prepare_voc_mosaics

    root = prepare_voc_mosaics(tmp_path_factory.mktemp("voc") / "voc", images=160)
    return root, root / "VOCdevkit" / "VOC2007"


def _voc_store(path, voc_dir, ids, failed=None, data_path=""):
    from pipeline.shipped.fashion_mnist import CLASSES

    main = voc_dir / "ImageSets" / "Main"
    lab = {}
    for c, name in enumerate(CLASSES):
        for split in ("trainval", "test"):
            for line in (main / f"{name}_{split}.txt").read_text().splitlines():
                i, v = line.split()
                lab.setdefault(i, [0] * len(CLASSES))[c] = int(v)
    big = mosaic_pixels(voc_dir, ids, 16)
    small = mosaic_pixels(voc_dir, ids, 8).reshape(len(ids), 8, 8, 3).repeat(2, 1).repeat(2, 2).reshape(len(ids), -1)
    return write_store(path, ids, np.array([lab[i] for i in ids], dtype=np.int8), CLASSES, [[big, small]], [16, 8],
                       failed=failed, provenance={"data": {"path": str(data_path), "kind": "voc", "split": "x"}})


def _ids(voc_dir, split):
    return (voc_dir / "ImageSets" / "Main" / f"{split}.txt").read_text().split()


def test_voc07_one_store_and_split_stores_agree(voc, tmp_path):
    root, voc_dir = voc
    all_ids = sorted(_ids(voc_dir, "trainval") + _ids(voc_dir, "test"))
    whole = _voc_store(tmp_path / "all.h5", voc_dir, all_ids)
    r1 = run_transfer(TransferConfig(stores=[str(whole)], protocol="voc07", out=str(tmp_path / "r1"), c_grid=GRID,
                                     voc_sets=str(root)))
    assert r1["metric"].startswith("mAP") and r1["std"] is None and r1["descriptor"]["aggregate"] == "avg"
    assert r1["splits"][0]["counts"] == {"fit": 40, "val": 40, "train": 80, "test": 80}
    assert r1["c_chosen_on"] == "val" and r1["chosen_C"] in GRID
    assert 0.2 < r1["mean"] < 1.0
    rows = _csv(tmp_path / "r1" / "decisions" / "test.csv")
    classes = list(r1["per_class"])
    gt = np.array([[int(x[f"label_{c}"]) for c in classes] for x in rows])
    sc = np.array([[float(x[f"score_{c}"]) for c in classes] for x in rows])
    m, aps = voc_map(sc, gt, "voc07")
    assert m == pytest.approx(r1["mean"]) and [x["id"] for x in rows] == _ids(voc_dir, "test")
    devkit = (tmp_path / "r1" / "decisions" / f"comp1_cls_test_{classes[0]}.txt").read_text().splitlines()
    assert [ln.split()[0] for ln in devkit] == _ids(voc_dir, "test")
    assert "| Method | VOC-2007 (mean AP) |" in (tmp_path / "r1" / "table.md").read_text()
    # one store per split (as `vgg extract --split` writes them), the lists found from the provenance
    tv = _voc_store(tmp_path / "trainval.h5", voc_dir, _ids(voc_dir, "trainval"), data_path=root)
    te = _voc_store(tmp_path / "test.h5", voc_dir, _ids(voc_dir, "test"), data_path=root)
    r2 = run_transfer(
        TransferConfig(stores=[str(tv)], test_stores=[str(te)], protocol="voc07", out=str(tmp_path / "r2"), c_grid=GRID)
    )
    assert r2["mean"] == pytest.approx(r1["mean"], abs=1e-9) and r2["chosen_C"] == r1["chosen_C"]
    # voc12 scores the same decisions with the area rule
    r3 = run_transfer(TransferConfig(stores=[str(whole)], protocol="voc12", out=str(tmp_path / "r3"), c_grid=GRID,
                                     voc_sets=str(root)))
    rows3 = _csv(tmp_path / "r3" / "decisions" / "test.csv")
    sc3 = np.array([[float(x[f"score_{c}"]) for c in classes] for x in rows3])
    assert r3["mean"] == pytest.approx(voc_map(sc3, gt, "voc10")[0])
    assert r3["mean"] != pytest.approx(voc_map(sc3, gt, "voc07")[0])
    # without the lists: C from a seeded hold-out of the training store
    tv0 = _voc_store(tmp_path / "trainval0.h5", voc_dir, _ids(voc_dir, "trainval"))
    te0 = _voc_store(tmp_path / "test0.h5", voc_dir, _ids(voc_dir, "test"))
    r4 = run_transfer(
        TransferConfig(
            stores=[str(tv0)], test_stores=[str(te0)], protocol="voc07", out=str(tmp_path / "r4"), c_grid=GRID
        )
    )
    assert "hold-out" in r4["c_chosen_on"] and r4["splits"][0]["counts"]["val"] == 16


def test_voc_image_without_descriptor_ranks_last(voc, tmp_path):
    root, voc_dir = voc
    test_ids = _ids(voc_dir, "test")
    tv = _voc_store(tmp_path / "trainval.h5", voc_dir, _ids(voc_dir, "trainval"))
    te = _voc_store(tmp_path / "test.h5", voc_dir, test_ids, failed={3: "truncated JPEG"})
    r = run_transfer(TransferConfig(stores=[str(tv)], test_stores=[str(te)], protocol="voc07", out=str(tmp_path / "o"),
                                    c_grid=[1.0], voc_sets=str(root)))
    assert r["skipped"]["test_without_descriptor"] == 1 and r["splits"][0]["counts"]["test"] == len(test_ids)
    rows = {x["id"]: x for x in _csv(tmp_path / "o" / "decisions" / "test.csv")}
    lost = rows[test_ids[3]]
    assert all(v == "nan" for k, v in lost.items() if k.startswith("score_"))
    # its ground truth comes from the devkit's per-class files
    bag = dict(ln.split() for ln in (voc_dir / "ImageSets" / "Main" / "bag_test.txt").read_text().splitlines())
    assert int(lost["label_bag"]) == int(bag[test_ids[3]])
    devkit = (tmp_path / "o" / "decisions" / "comp1_cls_test_bag.txt").read_text()
    assert test_ids[3] not in devkit  # not submitted: the devkit gives it -inf


def test_voc12_test_labels_not_public(voc, tmp_path):
    root, voc_dir = voc
    tv = _voc_store(tmp_path / "trainval.h5", voc_dir, _ids(voc_dir, "trainval"))
    ids = _ids(voc_dir, "test")
    big = mosaic_pixels(voc_dir, ids, 16)
    te = write_store(tmp_path / "test.h5", ids, np.zeros((len(ids), 10), np.int8), load_descriptors([tv]).classes,
                     [[big, big]], [16, 8])
    with pytest.raises(UserError, match="not public"):
        run_transfer(TransferConfig(stores=[str(tv)], test_stores=[str(te)], protocol="voc12", out=str(tmp_path / "o")))


def test_saved_result_follows_the_stores_content_not_their_file_times(digits_h5, digits_h5_b, tmp_path):
    import os
    import shutil

    store = shutil.copy(digits_h5, tmp_path / "d.h5")
    cfg = TransferConfig(stores=[str(store)], protocol="caltech101", out=str(tmp_path / "t"), c_grid=[1.0],
                         n_splits=1)
    first = run_transfer(cfg)
    assert first["status"] == "written" and first["identity"]["inputs"] == [sha256_file(store)]
    os.utime(store)  # touched, same bytes: the same inputs
    assert run_transfer(cfg)["status"] == "exists"
    shutil.copy(digits_h5_b, store)  # other descriptors under the same name: computed again
    again = run_transfer(cfg)
    assert again["status"] == "written" and again["identity"]["inputs"] != first["identity"]["inputs"]


# ---------------------------------------------------------------- raw-pixel baseline and CLI
def test_pixel_store_matches_pil(tmp_path):
    from PIL import Image

    from pipeline.features.batches import ExtractInput
    from pipeline.features.store import FeatureStore
    from pipeline.shipped.fashion_mnist import prepare_fashion_mnist

    tree = prepare_fashion_mnist(tmp_path / "fm", train_per_class=1, val_per_class=3)
    out = write_pixel_store(tree, tmp_path / "px.h5", size=8, split="val")
    inp = ExtractInput(tree, "val")
    with FeatureStore(out) as st:
        assert list(st.ids) == [e.key for e in inp.entries] and st.labels.tolist() == [e.label for e in inp.entries]
        raw = st.raw(0, 8)
    item = next(inp.items([5]))
    expect = np.asarray(item.image.resize((8, 8), Image.BILINEAR), dtype=np.float32).ravel()
    assert np.array_equal(raw[5], expect) and raw.shape == (30, 192)


def test_cli_json_and_errors(digits_h5, tmp_path, capsys):
    from pipeline.cli import main

    with pytest.raises(SystemExit) as e:
        main(["transfer", str(digits_h5), "--protocol", "caltech101", "--c-grid", "1", "--set", "n_splits=1",
              "--out", str(tmp_path / "o"), "--json"])
    assert e.value.code == 0
    out = json.loads(capsys.readouterr().out)
    assert {"protocol", "metric", "mean", "std", "per_class"} <= set(out) and out["protocol"] == "caltech101"
    with pytest.raises(SystemExit) as e:
        main(["transfer", str(tmp_path / "nope.h5"), "--protocol", "caltech101"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
