"""Where training JPEGs are decoded (data.decode): the header fast path, the raw-bytes path and its CPU fallback.

The default suite runs the raw path with the decode on the CPU (the same code, torchvision's CPU
decoder) and checks it gives the worker path's batches exactly; ``pytest -m gpu`` checks nvJPEG's
batches against the CPU path within JPEG decoders' tolerance.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.config import config_from
from pipeline.errors import UserError
from pipeline.images import decode_rgb
from pipeline.preprocess import TrainScale
from pipeline.train import TrainConfig
from pipeline.train.gpu_decode import collate_raw, finish_on_device
from pipeline.train.loader import TrainStream, open_shards, train_loader
from pipeline.transforms import ColourShift, RawCrop, TrainAugment, plain_jpeg_size, sample_rng
from tests.helpers.train import chunks, fmnist_samples, write_shards

COLOUR = ColourShift(eigval=[300.0, 40.0, 9.0], eigvec=np.eye(3).tolist())


def _save(img: Image.Image, fmt: str = "JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def images(photos) -> dict[str, bytes]:
    """Real photos stored the ways shards hold them: plain JPEGs (RGB, progressive, grey) and others."""
    china, flower = Image.fromarray(photos[0]), Image.fromarray(photos[1])
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    return {
        "rgb": _save(china, quality=90),
        "progressive": _save(flower, quality=85, progressive=True),
        "grey": _save(china.convert("L"), quality=90),
        "png": _save(flower, "PNG"),
        "exif-rotated": _save(china, quality=90, exif=exif),
        "cmyk": _save(flower.convert("CMYK"), quality=90),
    }


PLAIN = ("rgb", "progressive", "grey")


def test_header_size_is_pillows_for_plain_jpegs_and_none_otherwise(images):
    for name, data in images.items():
        want = Image.open(io.BytesIO(data)).size if name in PLAIN else None
        assert plain_jpeg_size(data) == want, name
    assert plain_jpeg_size(images["rgb"][:20]) is None  # cut before the frame header
    assert plain_jpeg_size(b"\xff\xd8\xff\xda" + bytes(20)) is None  # a scan before any frame


def test_rotated_and_cmyk_images_are_cropped_after_pillows_decode(images):
    """Non-plain images go through Pillow: the plan is made on the rotated size; S = smaller side is a plain slice."""
    for name in ("exif-rotated", "cmyk", "png"):
        ref = np.asarray(decode_rgb(images[name]))
        s = min(ref.shape[:2])
        aug = TrainAugment(scale=TrainScale(s_min=s, s_max=s), crop=224, flip=False, draft=False)
        got, _ = aug(images[name], sample_rng(0, 0, name))
        plan = aug.plan((ref.shape[1], ref.shape[0]), s, sample_rng(0, 0, name))
        x, y = plan.box[:2]
        np.testing.assert_array_equal(got.permute(1, 2, 0).numpy(), ref[y:y + 224, x:x + 224], err_msg=name)
    assert decode_rgb(images["exif-rotated"]).size == (427, 640)  # really rotated


def test_raw_path_decoded_in_the_training_process_equals_the_worker_path(images):
    scale = TrainScale(s_min=224, s_max=480)
    here = TrainAugment(scale=scale, crop=224, colour=COLOUR)
    raw = TrainAugment(scale=scale, crop=224, colour=COLOUR, decode_device="cpu")
    keys = [f"{name}/{k}" for name in images for k in range(3)]
    a = [here(images[k.split("/")[0]], sample_rng(1, 2, k)) for k in keys]
    b = [raw(images[k.split("/")[0]], sample_rng(1, 2, k)) for k in keys]
    assert [isinstance(x, RawCrop) for x, _ in b] == [k.split("/")[0] in PLAIN for k in keys]
    items = [(x, i, off) for i, (x, off) in enumerate(b)]
    x, y, off = finish_on_device(collate_raw(items), crop=224, device="cpu")
    assert x.shape == (len(keys), 3, 224, 224) and x.dtype == torch.uint8 and x.is_contiguous()
    assert torch.equal(x, torch.stack([t for t, _ in a]))
    assert torch.equal(y, torch.arange(len(keys))) and np.array_equal(off.numpy(), np.stack([o for _, o in a]))


def test_loader_with_a_decode_device_gives_the_same_batches(tmp_path):
    shards = open_shards(write_shards(tmp_path, {"train": chunks(fmnist_samples("train", 4), [25, 15])}), ["train"])
    base = dict(scale=TrainScale(s_min=32, s_max=40), crop=32, colour=COLOUR)

    def batches(aug, workers):
        return list(train_loader(TrainStream(shards, "train", aug, 8, 5, seed=3, shuffle_buffer=20, workers=workers),
                                 epoch=1, skip=1))

    for workers in (0, 2):  # the worker count decides which samples each batch holds: the same on both sides
        want = batches(TrainAugment(**base), workers)
        got = batches(TrainAugment(**base, decode_device="cpu"), workers)
        assert len(got) == len(want) == 4
        for (xa, ya, oa), (xb, yb, ob) in zip(want, got, strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(oa, ob)


def test_decode_option(tmp_path):
    decode_device = TrainAugment.decode_device_for
    assert decode_device("cpu", "cpu") is None and decode_device("auto", "cpu") is None
    assert decode_device("cpu", "cuda") is None
    assert decode_device("auto", "cuda") == ("cuda" if torch.cuda.is_available() else None)
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="data.decode=gpu needs a CUDA"):
            decode_device("gpu", "cuda")
    with pytest.raises(UserError, match="needs a CUDA training device"):
        decode_device("gpu", "cpu")
    cfg = {"data": {"shards": str(tmp_path)}, "out": str(tmp_path / "o")}
    assert config_from(TrainConfig, cfg).data.decode == "cpu"
    assert config_from(TrainConfig, {**cfg, "data": {"shards": str(tmp_path), "decode": "auto"}}).data.decode == "auto"
    with pytest.raises((UserError, ValueError)):
        config_from(TrainConfig, {**cfg, "data": {"shards": str(tmp_path), "decode": "tpu"}})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_decoded_batches_match_the_cpu_path(images):
    scale = TrainScale(s_min=224, s_max=480)
    cpu = TrainAugment(scale=scale, crop=224, colour=COLOUR)
    gpu = TrainAugment(scale=scale, crop=224, colour=COLOUR, decode_device="cuda")
    keys = [f"{name}/{k}" for name in images for k in range(4)]
    want = torch.stack([cpu(images[k.split("/")[0]], sample_rng(0, 0, k))[0] for k in keys])
    items = [(x, 0, off) for x, off in (gpu(images[k.split("/")[0]], sample_rng(0, 0, k)) for k in keys)]
    x, _, _ = finish_on_device(collate_raw(items), crop=224, device="cuda")
    assert x.device.type == "cuda" and x.shape == want.shape and x.dtype == torch.uint8
    diff = (x.cpu().float() - want.float()).abs()
    per_image = diff.mean(dim=(1, 2, 3))
    # nvJPEG vs libjpeg-turbo (IDCT, chroma upsampling) and float vs uint8 resampling: a few grey levels at
    # most on average; a wrong crop, scale or flip would differ by tens
    assert per_image.max() < 3.0, dict(zip(keys, per_image.tolist(), strict=True))
    assert diff.quantile(0.99) <= 16, diff.quantile(0.99)
