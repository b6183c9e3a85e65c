"""VOC-2012 action classification (Table 12) end to end: prepare-data voc-action -> extract --boxes -> transfer."""

from __future__ import annotations

import csv
import json

import h5py
import numpy as np
import pytest

from pipeline.cli import main
from pipeline.errors import UserError
from pipeline.models import build_model, init_weights, save_checkpoint
from pipeline.sources import open_source
from pipeline.transfer import TransferConfig, run_transfer

NORM = {"mean": [40.0, 40.0, 40.0], "std": [60.0, 60.0, 60.0]}


def cli(capsys, *args: str) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(list(args))
    assert e.value.code in (0, None)
    return capsys.readouterr().out


def voc_area_ap(scores: np.ndarray, labels: np.ndarray) -> float:
    """Independent VOC2010+ AP: rank by score, precision made monotone from the right, area over recall steps."""
    order = np.argsort(-scores, kind="stable")
    hits = labels[order] > 0
    tp, fp = np.cumsum(hits), np.cumsum(~hits)
    rec, prec = tp / hits.sum(), tp / (tp + fp)
    env = np.maximum.accumulate(prec[::-1])[::-1]
    prev = np.concatenate([[0.0], rec[:-1]])
    return float(np.sum((rec - prev) * env))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The shipped action tree (40 images), a small random-init net, and a store of trainval persons."""
    root = tmp_path_factory.mktemp("action")
    ck = root / "net.pt"
    net = init_weights(build_model(config="A", width=0.125, crop=32, fc_width=64, num_classes=10), "glorot", seed=0)
    save_checkpoint(ck, net, meta={"normalization": NORM, "train_scale": {"s_min": 32, "s_max": 48}})
    for args in (["prepare-data", "voc-action", str(root / "data"), "--images", "40"],
                 ["extract", str(ck), "--data", str(root / "data"), "--split", "trainval", "--boxes",
                  "--scales", "32,48", "--out", str(root / "tv.h5")]):
        with pytest.raises(SystemExit) as e:
            main(args)
        assert e.value.code in (0, None)
    return root, ck


def test_store_holds_one_region_descriptor_per_person(run):
    root, _ = run
    src = open_source(root / "data")
    persons = list(src.records("trainval"))
    with h5py.File(root / "tv.h5", "r") as f:
        assert list(f["ids"].asstr()[:]) == [r.key for r in persons]
        np.testing.assert_array_equal(f["labels"][:], np.array([r.labels for r in persons]))
        whole, box = f["descriptors/net0/32"][:], f["regions/net0/32"][:]
    image_of = [r.key.rsplit("-", 1)[0] for r in persons]
    pairs = [(i, i + 1) for i in range(len(persons) - 1) if image_of[i] == image_of[i + 1]]
    assert len(pairs) > 10
    for i, j in pairs:  # persons of one image: the same whole-image descriptor, their own box descriptor
        np.testing.assert_allclose(whole[i], whole[j], rtol=1e-4, atol=1e-7)  # other batch neighbours: last bits
        assert np.abs(box[i] - box[j]).max() > 1e-4
    assert np.abs(box - whole).max(axis=1).min() > 1e-4


def test_transfer_voc12_action_ap_per_action_recomputes(run, capsys):
    root, _ = run
    res = json.loads(cli(capsys, "transfer", str(root / "tv.h5"), "--protocol", "voc12-action", "--c-grid", "0.1,1,10",
                         "--out", str(root / "t"), "--json"))
    val = list(open_source(root / "data").records("val"))
    assert res["protocol"] == "voc12-action" and res["scored_split"] == "val"
    assert res["rows"] == len(val) and res["images"] == len({r.key.rsplit("-", 1)[0] for r in val}) == 20
    assert res["descriptor"]["regions"] is True and res["descriptor"]["dim"] == 2 * 64  # image and box stacked
    assert sorted(res["per_class"]) == sorted(open_source(root / "data").classes)
    with open(root / "t" / "decisions" / "test.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["id"] for r in rows] == [r.key for r in val]
    for a, ap in res["per_class"].items():
        labels = np.array([int(r[f"label_{a}"]) for r in rows])
        scores = np.array([float(r[f"score_{a}"]) for r in rows])
        if not (labels > 0).any():
            assert ap is None
            continue
        assert ap == pytest.approx(voc_area_ap(scores, labels), abs=1e-9), a
        devkit = (root / "t" / "decisions" / f"comp10_action_val_{a}.txt").read_text().split("\n")[0].split()
        assert devkit[:2] == [rows[0]["image"], rows[0]["person"]]
    aps = [v for v in res["per_class"].values() if v is not None]
    assert res["mean"] == pytest.approx(np.mean(aps))
    assert res["mean"] > 0.2  # ten actions: chance is about 0.1 even for a random-init net's features
    assert "VOC-2012 action (mean AP)" in (root / "t" / "table.md").read_text()


def test_train_and_val_stores_and_bad_input(run, tmp_path, capsys):
    root, ck = run
    for split in ("train", "val"):
        cli(capsys, "extract", str(ck), "--data", str(root / "data"), "--split", split, "--boxes", "--scales", "32,48",
            "--out", str(tmp_path / f"{split}.h5"))
    res = run_transfer(TransferConfig(stores=[str(tmp_path / "train.h5")], test_stores=[str(tmp_path / "val.h5")],
                                      protocol="voc12-action", c_grid=[0.1, 1, 10], out=str(tmp_path / "t")))
    listed = run_transfer(TransferConfig(stores=[str(root / "tv.h5")], protocol="voc12-action", c_grid=[0.1, 1, 10],
                                         out=str(tmp_path / "l")))
    assert res["rows"] == listed["rows"] and res["images"] == listed["images"] and res["scored_split"] == "test"
    sets = root / "data" / "VOCdevkit" / "VOC2012" / "ImageSets" / "Action"
    by_sets = run_transfer(TransferConfig(stores=[str(root / "tv.h5")], protocol="voc12-action", c_grid=[0.1, 1, 10],
                                          voc_sets=str(sets), out=str(tmp_path / "s")))
    assert by_sets["per_class"] == listed["per_class"]
    assert res["mean"] == pytest.approx(listed["mean"], abs=0.02)
    cli(capsys, "extract", str(ck), "--data", str(root / "data"), "--split", "val", "--scales", "32",
        "--out", str(tmp_path / "plain.h5"))
    with pytest.raises(UserError, match="extract with --boxes"):
        run_transfer(TransferConfig(stores=[str(tmp_path / "plain.h5")], protocol="voc12-action"))


def _person_store(path, keys, labels, whole, box, classes):
    """A complete per-person store with region descriptors (one scale), through the store's own writer."""
    from pipeline.features.store import FORMAT, StoreLayout, StoreWriter, create_store

    layout = StoreLayout(ids=keys, labels=labels, label_kind="multi", classes=classes, dims=[whole.shape[1]],
                         scales=[8], provenance={"checkpoints": [], "data": {"path": ""}},
                         identity={"format": FORMAT, "test": str(path)}, regions=True)
    create_store(path, layout)
    w = StoreWriter(path)
    w.write_batch(0, [whole[:, None]], np.ones(len(keys), bool), [], [box[:, None]])
    w.finalize()
    w.close()
    return path


def test_other_is_not_scored_and_the_box_carries_the_action(tmp_path):
    """Digits as persons, two per "image": the image part is the pair's mean, the box part the digit itself."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    classes = ["one", "other", "zero"]  # sorted; digits 0 / 1 / anything else
    act = np.where(y == 0, 2, np.where(y == 1, 0, 1))
    results = {}
    for setting in ("image+box", "image only"):
        stores = []
        for name, sl in (("train", slice(0, 600)), ("test", slice(600, 1000))):
            xs, a = x[sl].astype(np.float32), act[sl]
            whole = np.repeat((xs[0::2] + xs[1::2]) / 2, 2, axis=0)
            keys = [f"{name}{i // 2:04d}-{i % 2 + 1}" for i in range(len(xs))]
            labels = np.where(a[:, None] == np.arange(3)[None], 1, -1).astype(np.int8)
            box = xs if setting == "image+box" else whole
            stores.append(_person_store(tmp_path / f"{setting}-{name}.h5", keys, labels, whole, box, classes))
        results[setting] = run_transfer(TransferConfig(
            stores=[str(stores[0])], test_stores=[str(stores[1])], protocol="voc12-action", c_grid=[0.01, 0.1, 1],
            out=str(tmp_path / setting)))
    res = results["image+box"]
    assert sorted(res["per_class"]) == ["one", "zero"] and res["unscored_classes"] == ["other"]
    assert res["rows"] == 400 and res["images"] == 200 and res["scored_split"] == "test"
    assert sorted(p.name for p in (tmp_path / "image+box" / "decisions").iterdir()) == [
        "comp10_action_test_one.txt", "comp10_action_test_zero.txt", "test.csv"]
    # the box descriptor tells the two persons of an image apart; the image alone cannot
    assert res["mean"] > 0.85 and res["mean"] > results["image only"]["mean"] + 0.2
