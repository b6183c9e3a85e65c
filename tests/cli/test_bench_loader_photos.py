"""The loader-photos / loader-camera rows: the photo generator's sizes and the rows' code."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from pipeline.bench import STAGES, load_benchmark


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


def test_rows_run_at_minimal_size(tmp_path, bench, photos):
    tiny = bench.Plan(n=4, images=8, folder_images=4, reps=1, levers=False)
    rows = bench.stage_rows("loader-photos", photos.IMAGENET, tiny, tmp_path / "p")
    assert len(rows) == 4  # 2 goals, 2 diagnostics
    rows += bench.stage_rows("loader-camera", photos.scaled(photos.CAMERA, 0.25), bench.Plan(2, 8, 2, 1, True),
                             tmp_path / "c")
    goals = [(r["stage"], r["goal"]) for r in rows if r["goal"] != "report"]
    assert goals == [("loader-photos", ">= 1x"), ("loader-photos", ">= 0.8x"),
                     ("loader-camera", ">= 3x"), ("loader-camera", ">= 0.8x")]
    assert len([r for r in rows if r["stage"] == "loader-camera"]) == 7  # 2 goals, 2 diagnostics, 3 levers
    for r in rows:
        assert r["ours"] > 0 and r["baseline"] > 0 and r["ratio"] == pytest.approx(r["ours"] / r["baseline"])
        assert r["note"] and r["unit"].startswith("images/s")
    assert "4 originals" in rows[0]["note"] and "2 originals 756-756 px" in rows[4]["note"]
    assert {"loader-photos", "loader-camera"} <= set(STAGES)


def test_step_timings_cover_every_step(tmp_path, bench, photos):
    blobs = [p.read_bytes() for p in photos.write_photo_tree(tmp_path, photos.IMAGENET, 2, workers=1)]
    ms = bench.steps(blobs, reps=1)
    assert len(ms) == 7 and all(v > 0 for v in ms.values()), ms


def test_gpu_decode_rows_run_with_the_decode_on_the_cpu(tmp_path, bench):
    """gpu_check.sh's loader rows, with the raw-bytes path decoded on the CPU (the code path nvJPEG takes)."""
    rows = bench.gpu_rows(device="cpu", sizes=(4, 16, 1))
    assert [r["stage"] for r in rows] == ["loader-photos-gpu"] * 2
    assert all(r["ours"] > 0 and r["baseline"] > 0 and r["goal"] == "report" for r in rows)
