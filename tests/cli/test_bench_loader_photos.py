"""The loader-photos / loader-camera rows: the photo generator's sizes, the crop experiments, the rows' code."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.bench import STAGES, load_benchmark
from pipeline.preprocess import TrainScale
from pipeline.transforms import TrainAugment, sample_rng


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_loader_photos.py")


@pytest.fixture(scope="module")
def photos(bench):
    return bench._photos()


def test_imagenet_size_photos_have_imagenet_sizes_and_are_deterministic(tmp_path, photos):
    paths = photos.write_photo_tree(tmp_path, photos.IMAGENET, 4, workers=1)
    assert [p.parent.name for p in paths] == ["class0", "class1", "class2", "class3"]
    for p in paths:
        with Image.open(p) as im:
            assert im.format == "JPEG" and im.mode == "RGB"
            assert 400 <= min(im.size) <= 500 and 1.2 <= max(im.size) / min(im.size) <= 1.55
        assert 80_000 <= p.stat().st_size <= 150_000, p.stat().st_size
    again = photos.write_photo_tree(tmp_path / "again", photos.IMAGENET, 2, workers=2)
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in paths[:2]]  # independent of the workers


def test_camera_size_photo_is_12_megapixels_and_megabytes(photos):
    data = photos._draw_one(photos.CAMERA, 0, 0)
    with Image.open(io.BytesIO(data)) as im:
        assert sorted(im.size) == [3024, 4032]
    assert 2_000_000 <= len(data) <= 6_000_000, len(data)


def _crops(aug, data: bytes, key: str):
    return aug(data, sample_rng(0, 0, key))


def test_crop_before_resize_gives_the_loaders_crops(tmp_path, bench, photos):
    """Same draws, same crop: Pillow's resize(box=crop) differs from resize-then-crop only by rounding."""
    stats = {"eigval": [100.0, 20.0, 5.0], "eigvec": np.eye(3).tolist()}
    ref = TrainAugment(scale=TrainScale(s_min=bench.S_MIN, s_max=bench.S_MAX), crop=bench.CROP,
                       colour=bench.ColourShift.from_stats(stats))
    exp = bench._augment(stats, variant="box")
    paths = photos.write_photo_tree(tmp_path, photos.IMAGENET, 2, workers=1)
    diffs = []
    for p in paths:
        data = p.read_bytes()
        for k in range(12):  # S spans down- and upscaling of the 400-500 px photos; flips both ways
            (a, oa), (b, ob) = _crops(ref, data, f"{p.name}/{k}"), _crops(exp, data, f"{p.name}/{k}")
            assert a.shape == b.shape == (3, bench.CROP, bench.CROP) and b.dtype == a.dtype
            np.testing.assert_array_equal(oa, ob)
            diffs.append((a.float() - b.float()).abs().mean().item())
    assert max(diffs) < 0.6, diffs


def test_torch_window_rescale_is_pillows_crop_where_it_lands(tmp_path, bench, photos):
    """The window experiment equals Pillow's resize of the crop at the position it reports (within a pixel)."""
    import torch

    (path,) = photos.write_photo_tree(tmp_path, photos.IMAGENET, 1, workers=1)
    img = Image.open(path).convert("RGB")
    w, h = img.size
    full = torch.from_numpy(np.array(img)).permute(2, 0, 1)
    c = bench.CROP
    for s in (256, 300, 433, 512):  # downscaling and upscaling
        big = bench._rescaled(w, h, s)
        sx, sy = w / big[0], h / big[1]
        for x, y in ((0, 0), (37, 21), (big[0] - c, big[1] - c)):  # corners included
            x0, y0, x1, y1 = bench._window(w, h, sx, sy, x, y, c)
            out, xf, yf = bench._window_rescale(full[:, y0:y1, x0:x1], x0, y0, sx, sy, x, y, c)
            assert abs(xf - x) <= 1 and abs(yf - y) <= 1
            ref = img.resize((c, c), Image.BILINEAR, box=(xf * sx, yf * sy, (xf + c) * sx, (yf + c) * sy))
            diff = (out.float() - torch.from_numpy(np.array(ref)).permute(2, 0, 1).float()).abs()
            assert diff.mean() < 0.3 and diff.max() <= 6, (s, x, y, diff.mean(), diff.max())


def test_rows_run_at_minimal_size(tmp_path, bench, photos):
    tiny = bench.Plan(n=4, images=8, folder_images=4, reps=1, levers=False)
    rows = bench.stage_rows("loader-photos", photos.IMAGENET, tiny, tmp_path / "p")
    assert len(rows) == 5  # 2 goals, 3 diagnostics
    rows += bench.stage_rows("loader-camera", photos.scaled(photos.CAMERA, 0.25), bench.Plan(2, 8, 2, 1, True),
                             tmp_path / "c")
    goals = [(r["stage"], r["goal"]) for r in rows if r["goal"] != "report"]
    assert goals == [("loader-photos", ">= 1x"), ("loader-photos", ">= 0.8x"),
                     ("loader-camera", ">= 3x"), ("loader-camera", ">= 0.8x")]
    assert len([r for r in rows if r["stage"] == "loader-camera"]) == 8  # 2 goals, 3 diagnostics, 3 levers
    for r in rows:
        assert r["ours"] > 0 and r["baseline"] > 0 and r["ratio"] == pytest.approx(r["ours"] / r["baseline"])
        assert r["note"] and r["unit"].startswith("images/s")
    assert "4 originals" in rows[0]["note"] and "2 originals 756-756 px" in rows[5]["note"]
    assert {"loader-photos", "loader-camera"} <= set(STAGES)


def test_step_timings_cover_every_step(tmp_path, bench, photos):
    blobs = [p.read_bytes() for p in photos.write_photo_tree(tmp_path, photos.IMAGENET, 2, workers=1)]
    ms = bench.steps(blobs, reps=1)
    assert len(ms) == 7 and all(v > 0 for v in ms.values())
