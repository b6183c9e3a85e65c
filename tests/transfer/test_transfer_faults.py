"""`vgg transfer` under faults: non-finite descriptors, a dataset deleted from a store, and class
names that look like paths (nothing may be written outside ``--out``)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from pipeline.errors import UserError
from pipeline.transfer.descriptors import load_descriptors
from tests.helpers.stores import assert_one_line_error, digits_store, make_checkpoint, photo_crops, run_main


@pytest.fixture
def digits(tmp_path) -> Path:
    return digits_store(tmp_path / "digits.h5")


def _transfer(store: Path, out: Path, solver: str) -> list:
    return ["transfer", store, "--protocol", "generic", "--train-per-class", "6", "--test-per-class", "4",
            "--c-grid", "0.1,1", "--solver", solver, "--out", out]


@pytest.mark.parametrize("solver", ["newton", "liblinear"])
def test_non_finite_descriptors_are_refused_with_the_rows_named(digits, tmp_path, capfd, solver):
    code, text = run_main(_transfer(digits, tmp_path / "ok", solver), capfd)
    assert code == 0, text  # the intact store runs
    with h5py.File(digits, "r+") as f:
        x = f["descriptors/net0/8"]
        x[3, 5] = np.nan
        y = f["descriptors/net0/4"]
        y[7, 0] = np.inf
        ids = list(f["ids"].asstr()[:])
    code, text = run_main(_transfer(digits, tmp_path / "bad", solver), capfd)
    line = assert_one_line_error(code, text, "non-finite descriptors (NaN/Inf)", "descriptors/net0/8", ids[3])
    assert "row(s): 3" in line
    assert not (tmp_path / "bad" / "transfer.json").exists()
    with pytest.raises(UserError, match=f"descriptors/net0/4 at 1 row\\(s\\): 7 \\('{ids[7]}'\\)"):
        load_descriptors([digits], scales=[4])


def test_store_with_a_deleted_dataset_is_a_one_line_error(digits, tmp_path, capfd):
    with h5py.File(digits, "r+") as f:
        del f["descriptors/net0/4"]
    code, text = run_main(_transfer(digits, tmp_path / "t", "newton"), capfd)
    assert_one_line_error(code, text, "damaged feature store", "descriptors/net0/4 is missing")
    with h5py.File(digits, "r+") as f:
        del f["labels"]
    code, text = run_main(_transfer(digits, tmp_path / "t", "newton"), capfd)
    assert_one_line_error(code, text, "dataset labels is missing")


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def test_path_like_class_names_never_leave_out(tmp_path, photos, capfd):
    """A multi-label manifest whose class is ``../../../../escaped``: extract, then `vgg transfer
    --protocol voc07` writes every file, the devkit's comp1 files included, inside ``--out``."""
    evil = "../../../../escaped"
    data = tmp_path / "data"
    (data / "img").mkdir(parents=True)
    rows = []
    for i, img in enumerate(photo_crops(photos, 18, seed=3)):
        img.save(data / "img" / f"{i:03d}.jpg", quality=90)
        labels = [evil] if i % 3 == 0 else ["cat"] if i % 3 == 1 else [evil, "cat"]
        rows.append({"path": f"img/{i:03d}.jpg", "labels": labels, "split": "test" if i >= 12 else "trainval"})
    manifest = data / "list.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    net = make_checkpoint(tmp_path / "net.pt")
    for split in ("trainval", "test"):
        code, text = run_main(["extract", net, "--data", manifest, "--split", split, "--out", tmp_path / f"{split}.h5",
                               "--scales", "32,48", "--quiet"], capfd)
        assert code == 0, text
    out = tmp_path / "runs" / "out"
    out.parent.mkdir()
    before = _files(tmp_path)
    code, text = run_main(["transfer", tmp_path / "trainval.h5", "--test", tmp_path / "test.h5", "--protocol", "voc07",
                           "--c-grid", "1", "--out", out, "--json"], capfd)
    assert code == 0, text
    new = _files(tmp_path) - before
    assert new and all(p.is_relative_to(out) for p in new), sorted(map(str, new))
    assert not list(tmp_path.parent.glob("escaped*")) and not list(tmp_path.rglob("escaped*"))
    devkit = {p.name for p in (out / "decisions").iterdir() if p.name.startswith("comp1_")}
    assert devkit == {"comp1_cls_test_cat.txt", "comp1_cls_test_..%2F..%2F..%2F..%2Fescaped.txt"}
    result = json.loads((out / "transfer.json").read_text())
    assert result["outputs"]["devkit_files"][evil] == "comp1_cls_test_..%2F..%2F..%2F..%2Fescaped.txt"
    assert set(result["per_class"]) == {evil, "cat"}
    lines = (out / "decisions" / "comp1_cls_test_cat.txt").read_text().splitlines()
    assert len(lines) == 6 and all(len(x.split(" ")) == 2 for x in lines)


def test_names_become_file_names_only_escaped(tmp_path):
    """Escaping keeps plain names, never yields a separator, and never maps two names to one file;
    reading the devkit's per-class files refuses names that are not plain."""
    from pipeline.sources.voc import VOCSource, file_part
    from pipeline.transfer.report import devkit_id

    names = ["aeroplane", "tv-monitor", "../../x", "..", ".hidden", "a/b", "a%2Fb", "tv monitor", "\n", "é", "a\\b"]
    parts = [file_part(n) for n in names]
    assert parts[:2] == ["aeroplane", "tv-monitor"]
    assert len(set(parts)) == len(names) and not any("/" in p or "\\" in p or "\n" in p for p in parts)
    assert devkit_id("2008_000001") == "2008_000001" and devkit_id("a b\n%") == "a%20b%0A%25"
    main = tmp_path / "VOC2007" / "ImageSets" / "Main"
    main.mkdir(parents=True)
    (main / "test.txt").write_text("000001\n")
    (main.parents[1] / "x_test.txt").write_text("000001 1\n")  # what "../../x" would reach from Main
    with pytest.raises(UserError, match="'../../x' cannot name a devkit file"):
        VOCSource(main).class_labels("test", ["cat", "../../x"])
