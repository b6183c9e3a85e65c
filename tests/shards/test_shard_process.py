"""One image into one sample: sizes, boxes, draft mode, original bytes (paper 3.1, S_max)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.shards.config import ShardConfig
from pipeline.shards.process import Prepared, Skipped, prepare_sample, scale_boxes, skip_category, target_size
from pipeline.sources.base import Record
from tests.helpers.layouts import jpeg_bytes, photo


def _opts(**kw) -> ShardConfig:
    """What the workers read of the config."""
    return ShardConfig(source="-", out="-", **kw)


@pytest.mark.parametrize("size,max_side,want", [((1200, 900), 512, (683, 512)), ((900, 1200), 512, (512, 683)),
                                                 ((300, 200), 512, (300, 200)), ((512, 700), 512, (512, 700)),
                                                 ((640, 480), None, (640, 480))])
def test_target_size_smaller_side_never_upscaled(size, max_side, want):
    assert target_size(*size, max_side) == want


def test_scale_boxes_and_skip_category():
    b = scale_boxes([{"xmin": 10, "ymin": 20, "xmax": 110, "ymax": 220, "name": "x", "difficult": True}], 0.5, 0.25)
    assert b == [{"xmin": 5.0, "ymin": 5.0, "xmax": 55.0, "ymax": 55.0, "name": "x", "difficult": True}]
    assert scale_boxes(None, 1, 1) is None
    assert skip_category("too many pixels (5x5 > 3), possible decompression bomb") == "too many pixels"
    assert skip_category("cannot decode: broken data stream") == "cannot decode"


def test_draft_mode_gives_the_same_image_up_to_jpeg_noise(tmp_path):
    src = photo(3, (1600, 1200))
    rec = Record(
        key="k", label=0, data=jpeg_bytes(src, quality=95), boxes=[{"xmin": 100, "ymin": 100, "xmax": 900, "ymax": 700}]
    )
    a = prepare_sample(rec, _opts(max_side=256, draft=True))
    b = prepare_sample(rec, _opts(max_side=256, draft=False))
    assert isinstance(a, Prepared) and isinstance(b, Prepared)
    ia, ib = (np.asarray(Image.open(io.BytesIO(x.jpg)), dtype=np.float64) for x in (a, b))
    assert ia.shape == ib.shape == (256, 341, 3)
    ref = np.asarray(src.resize((341, 256), Image.BICUBIC), dtype=np.float64)
    assert np.abs(ia - ref).mean() < 4 and np.abs(ib - ref).mean() < 4  # DCT downscale + q90 JPEG
    assert a.meta["boxes"][0]["xmax"] == pytest.approx(900 * 341 / 1600, abs=0.01)
    assert a.meta["size"] == [1600, 1200] and a.meta["stored_size"] == [341, 256]


def test_original_bytes_kept_only_for_rgb_jpeg_within_limit():
    small = jpeg_bytes(photo(1, (300, 200)))
    assert prepare_sample(Record(key="a", data=small), _opts(max_side=256)).jpg == small
    assert prepare_sample(Record(key="a", data=small), _opts(max_side=256, keep_original=False)).jpg != small
    assert prepare_sample(Record(key="a", data=small), _opts(max_side=150)).jpg != small
    grey = jpeg_bytes(photo(1, (300, 200)).convert("L"))
    out = prepare_sample(Record(key="g", data=grey), _opts(max_side=256))
    assert out.jpg != grey and Image.open(io.BytesIO(out.jpg)).mode == "RGB"
    truncated = small[: len(small) // 2]
    s = prepare_sample(Record(key="t", data=truncated), _opts(max_side=256))
    assert isinstance(s, Skipped) and s.reason.startswith("cannot decode")  # validated, not copied blindly


def test_reader_skips_pass_through():
    s = prepare_sample(Record(key="v", extras={"skip": "no validation label", "source_path": "x.JPEG"}), _opts())
    assert isinstance(s, Skipped) and s.reason == "no validation label" and s.path == "x.JPEG"
