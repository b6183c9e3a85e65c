"""Checkpoints under faults: tensors verified by their recorded sha256, files holding pickled
objects or cut short, a stale temp file of a killed `train`, a bad ``last.pt`` in `localise train`."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pipeline.errors import UserError
from pipeline.models import load_checkpoint, load_model
from pipeline.models.checkpoint import HASH_KEY, tensors_sha256
from tests.helpers.stores import assert_one_line_error, make_checkpoint, photo_crops, run_main


def _flip_tensor_byte(path: Path, tensor: torch.Tensor) -> None:
    """Flip one bit inside the stored bytes of ``tensor`` (found in the file by its contents)."""
    data = bytearray(path.read_bytes())
    needle = tensor.detach().contiguous().reshape(-1)[:8].numpy().tobytes()
    at = bytes(data).find(needle)
    assert at > 0 and bytes(data).find(needle, at + 1) < 0
    data[at + 5] ^= 0x04
    path.write_bytes(bytes(data))


def test_checkpoint_round_trip_records_and_verifies_its_tensors(tmp_path, capfd):
    ck = make_checkpoint(tmp_path / "net.pt")
    obj = load_checkpoint(ck)
    assert obj[HASH_KEY] == tensors_sha256(obj) and len(obj[HASH_KEY]) == 64
    model, _ = load_model(ck)
    for k, v in model.state_dict().items():
        assert torch.equal(v, obj["state_dict"][k])
    code, text = run_main(["inspect", ck], capfd)
    assert code == 0 and HASH_KEY in text, text


def test_flipped_bit_in_the_weights_is_caught(tmp_path, capfd):
    ck = make_checkpoint(tmp_path / "net.pt")
    w = load_checkpoint(ck)["state_dict"]["classifier.0.weight"]
    _flip_tensor_byte(ck, w)
    raw = torch.load(ck, weights_only=True)  # torch itself reads the damaged file without a word
    assert not torch.equal(raw["state_dict"]["classifier.0.weight"], w)
    code, text = run_main(["inspect", ck], capfd)
    assert_one_line_error(code, text, "damaged checkpoint", "sha256")
    with pytest.raises(UserError, match="do not match their recorded sha256"):
        load_model(ck)


class _Payload:  # a pickled object: never loaded
    pass


def test_pickled_objects_and_cut_files_are_one_line_errors(tmp_path, capfd):
    bad = tmp_path / "objects.pt"
    torch.save({"format": "vgg-pipeline/1", "model": {}, "extra": _Payload()}, bad)
    code, text = run_main(["inspect", bad], capfd)
    line = assert_one_line_error(code, text, "pickled Python objects", "_Payload")
    assert "weights_only" not in text
    cut = tmp_path / "cut.pt"
    cut.write_bytes(make_checkpoint(tmp_path / "net.pt").read_bytes()[:5000])
    code, text = run_main(["inspect", cut], capfd)
    assert_one_line_error(code, text, "damaged or truncated")
    assert "weights_only" not in line


def _tiny_shards(root: Path, photos) -> Path:
    """An ImageFolder tree (train/ and val/, two classes of photo crops) to shard."""
    src = root / "src"
    for i, img in enumerate(photo_crops(photos, 24, seed=1)):
        d = src / ("train" if i < 18 else "val") / ("china" if i % 2 == 0 else "flower")
        d.mkdir(parents=True, exist_ok=True)
        img.save(d / f"{i:03d}.jpg", quality=90)
    return src


def _train_config(tmp_path: Path, shards: Path, epochs: int) -> Path:
    cfg = {"out": str(tmp_path / "run"),
           "model": {"config": "A", "num_classes": 2, "width": 0.125, "fc_width": 16, "crop": 32, "dropout": 0.0},
           "data": {"shards": str(shards), "scale": {"s_min": 32, "s_max": 40}, "workers": 0, "shuffle_buffer": 8,
                    "mean": [120.0, 115.0, 105.0], "std": [60.0, 60.0, 60.0], "colour_shift": 0},
           "optim": {"lr": 0.001, "batch_size": 6}, "schedule": {"max_epochs": epochs}, "init": {"method": "glorot"},
           "runtime": {"bf16": False, "channels_last": False, "threads": 1}, "checkpoint_every": 0, "log_every": 1}
    path = tmp_path / f"train{epochs}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_train_cleans_a_killed_runs_temp_file_and_refuses_a_damaged_last(tmp_path, photos, capfd):
    from pipeline.shards.config import ShardConfig
    from pipeline.shards.run import run_shard

    run_shard(ShardConfig(source=str(_tiny_shards(tmp_path, photos)), out=str(tmp_path / "shards"), workers=1,
                          progress=False))
    code, text = run_main(["train", "--config", _train_config(tmp_path, tmp_path / "shards", 1)], capfd)
    assert code == 0, text
    ck_dir = tmp_path / "run" / "checkpoints"
    last = ck_dir / "last.pt"
    # what a kill -9 during torch.save leaves: a temp file (atomic_path's name) holding part of a checkpoint
    fd, name = tempfile.mkstemp(prefix=".last.pt.", suffix=".tmp", dir=ck_dir)
    with open(fd, "wb") as fh:
        fh.write(last.read_bytes()[:3000])
    code, text = run_main(["train", "--config", _train_config(tmp_path, tmp_path / "shards", 2), "--resume"], capfd)
    assert code == 0, text
    assert not Path(name).exists() and sorted(p.name for p in ck_dir.iterdir()) == ["best.pt", "last.pt"]
    assert load_checkpoint(last)["position"]["epoch"] >= 1
    _flip_tensor_byte(last, load_checkpoint(last)["state_dict"]["features.0.weight"])
    code, text = run_main(["train", "--config", _train_config(tmp_path, tmp_path / "shards", 3), "--resume"], capfd)
    assert_one_line_error(code, text, "last.pt", "damaged checkpoint")


def _voc(root: Path, photos) -> Path:
    """A VOCdevkit/VOC2007 tree (train split) of photo crops, one "cat" box each."""
    d = root / "VOCdevkit" / "VOC2007"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (d / sub).mkdir(parents=True)
    ids = []
    for i, img in enumerate(photo_crops(photos, 4, seed=2)):
        key = f"{i:06d}"
        img.save(d / "JPEGImages" / f"{key}.jpg", quality=90)
        (d / "Annotations" / f"{key}.xml").write_text(
            f"<annotation><filename>{key}.jpg</filename><size><width>{img.width}</width><height>{img.height}</height>"
            f"<depth>3</depth></size><object><name>cat</name><difficult>0</difficult><bndbox><xmin>2</xmin>"
            f"<ymin>3</ymin><xmax>{img.width - 4}</xmax><ymax>{img.height - 5}</ymax></bndbox></object></annotation>")
        ids.append(key)
    (d / "ImageSets" / "Main" / "train.txt").write_text("".join(f"{k}\n" for k in ids))
    return root


@pytest.mark.parametrize("damage", ["garbage", "bitflip", "not-localise"])
def test_localise_train_with_a_bad_last_pt_is_a_one_line_error(tmp_path, photos, capfd, damage):
    from pipeline.models import build_model, init_weights, save_checkpoint
    from pipeline.sources.voc import VOC_CLASSES

    voc = _voc(tmp_path / "voc", photos)
    classifier = tmp_path / "cls.pt"
    model = init_weights(build_model(config="A", width=0.125, fc_width=16, crop=32, num_classes=len(VOC_CLASSES)),
                         "glorot", seed=0)
    save_checkpoint(classifier, model, meta={"classes": list(VOC_CLASSES), "train_scale": {"s_min": 48, "s_max": 48},
                                             "normalization": {"mean": [120.0] * 3, "std": [60.0] * 3}})
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    last.parent.mkdir(parents=True)
    if damage == "garbage":
        last.write_bytes(np.random.default_rng(0).bytes(4000))
        needle = "not a loadable checkpoint"
    else:
        last.write_bytes(classifier.read_bytes())
        needle = "not a `localise train` checkpoint"
        if damage == "bitflip":
            _flip_tensor_byte(last, model.state_dict()["classifier.0.weight"])
            needle = "damaged checkpoint"
    code, text = run_main(
        [
            "localise",
            "train",
            "--data",
            voc,
            "--classifier",
            classifier,
            "--out",
            tmp_path / "run",
            "--set",
            "epochs=1",
            "--set",
            "batch_size=2",
            "--set",
            "scale=48",
            "--set",
            "progress=false",
        ],
        capfd,
    )
    assert_one_line_error(code, text, str(last), needle)
