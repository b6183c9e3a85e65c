"""Training augmentation (paper 3.1) checked against PIL/numpy by hand and docs/formats.md's constants."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.errors import UserError
from pipeline.images import decode_rgb
from pipeline.preprocess import Normalization, TrainScale, isotropic_resize
from pipeline.transforms import CentreCropView, ColourShift, TrainAugment, colour_shift_and_normalize, sample_rng

# docs/formats.md section 5: ImageNet eigenvalues for pixels in [0, 1] and eigenvectors (columns)
EIGVAL01 = np.array([0.2175, 0.0188, 0.0045])
EIGVEC = np.array([[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]])


def _jpeg(arr: np.ndarray, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture(scope="module")
def photo(photos) -> Image.Image:
    return Image.fromarray(photos[0])  # china.jpg, 640 x 427


def test_scale_jitter_draws_every_scale_and_keeps_aspect(photo):
    rng = np.random.default_rng(0)
    draws = [TrainScale(s_min=256, s_max=264).draw(rng) for _ in range(2000)]
    assert set(draws) == set(range(256, 265))  # inclusive range, uniform-ish
    counts = np.bincount(draws)[256:]
    assert counts.min() > 2000 / 9 * 0.7
    out = isotropic_resize(photo, 300)
    assert min(out.size) == 300 and out.size == (round(640 * 300 / 427), 300)
    assert TrainScale(s_min=256, s_max=256).draw(rng) == 256
    with pytest.raises(UserError, match="s_min <= s_max"):
        TrainAugment(scale=TrainScale(s_min=300, s_max=256), crop=224)


def test_random_crop_position_and_flip_are_drawn_per_sample():
    """The crop lies anywhere in the image rescaled to S; half of the crops are mirrored."""
    aug = TrainAugment(scale=TrainScale(s_min=427, s_max=427), crop=224)
    plans = [aug.plan((640, 427), 427, np.random.default_rng(s)) for s in range(400)]
    rng = np.random.default_rng(5)
    x, y = int(rng.integers(0, 640 - 224 + 1)), int(rng.integers(0, 427 - 224 + 1))
    assert plans[5].box == (x, y, x + 224, y + 224) and plans[5].scale == (1.0, 1.0)
    assert len({p.box for p in plans[:5]}) == 5
    assert 150 < sum(p.flip for p in plans) < 250
    still = TrainAugment(scale=TrainScale(s_min=427, s_max=427), crop=224, flip=False)
    assert not any(still.plan((640, 427), 427, np.random.default_rng(s)).flip for s in range(50))


def test_colour_shift_matches_alexnet_formula_and_fb_resnet_scale():
    # the manifest stores eigenvalues of the 0-255 covariance: 255^2 x the [0, 1] ones
    cs = ColourShift(eigval=EIGVAL01 * 255**2, eigvec=EIGVEC, alpha_std=0.1)
    rng = np.random.default_rng(0)
    offs = np.stack([cs.offset(rng) for _ in range(5000)]).astype(np.float64)
    assert np.abs(offs.mean(0)).max() < 0.3
    # projections on the eigenvectors: std 0.1 * lambda_[0,1] * 255 (fb.resnet: 0.1 * 55.46 on the first axis)
    proj = offs @ EIGVEC  # EIGVEC is orthonormal up to rounding
    np.testing.assert_allclose(proj.std(0), 0.1 * EIGVAL01 * 255, rtol=0.08)
    # one draw by hand: offset = P (alpha * lambda) / 255
    a = np.random.default_rng(3).normal(0, 0.1, 3)
    np.testing.assert_allclose(cs.offset(np.random.default_rng(3)), EIGVEC @ (a * EIGVAL01 * 255), rtol=1e-5)


def test_colour_shift_needs_statistics():
    with pytest.raises(UserError, match="vgg stats"):
        ColourShift.from_stats(None)
    with pytest.raises(UserError):
        ColourShift.from_stats({"mean": [1, 2, 3]})


def test_shift_and_normalize_by_hand():
    x = torch.tensor(np.random.default_rng(0).integers(0, 256, (2, 3, 4, 4)), dtype=torch.uint8)
    off = torch.tensor([[1.0, -2.0, 3.0], [0.5, 0.0, -1.0]])
    norm = Normalization(mean=(120.0, 110.0, 100.0), std=(2.0, 1.0, 4.0))
    want = (x.double().numpy() + off.numpy()[:, :, None, None] - np.array([120, 110, 100])[None, :, None, None]) \
        / np.array([2.0, 1.0, 4.0])[None, :, None, None]
    np.testing.assert_allclose(colour_shift_and_normalize(x, off, norm).numpy(), want, rtol=1e-6)


def test_train_augment_is_a_function_of_seed_epoch_and_key(photos):
    data = _jpeg(photos[1])
    aug = TrainAugment(scale=TrainScale(s_min=256, s_max=512), crop=224,
                       colour=ColourShift(eigval=EIGVAL01 * 255**2, eigvec=EIGVEC))
    a, oa = aug(data, sample_rng(0, 3, "flower"))
    b, ob = aug(data, sample_rng(0, 3, "flower"))
    c, oc = aug(data, sample_rng(0, 4, "flower"))
    assert a.shape == (3, 224, 224) and a.dtype == torch.uint8
    assert torch.equal(a, b) and np.array_equal(oa, ob)
    assert not torch.equal(a, c)
    with pytest.raises(UserError, match="below the crop"):
        TrainAugment(scale=TrainScale(s_min=200, s_max=256), crop=224)


def test_draft_decoding_gives_nearly_the_same_crops(photos):
    big = np.asarray(Image.fromarray(photos[0]).resize((2560, 1708), Image.BICUBIC))
    data = _jpeg(big)
    scale = TrainScale(s_min=256, s_max=256)
    fast = TrainAugment(scale=scale, crop=224, flip=False, draft=True)
    slow = TrainAugment(scale=scale, crop=224, flip=False, draft=False)
    a, _ = fast(data, sample_rng(0, 0, "k"))
    b, _ = slow(data, sample_rng(0, 0, "k"))
    # the same crop position, decoded at 1/4 size by libjpeg before the resize: close, not equal
    diff = (a.float() - b.float()).abs().mean().item()
    assert 0 < diff < 6, diff
    img = Image.open(io.BytesIO(data))
    img.draft("RGB", (256, 256))
    assert min(img.size) >= 256 and img.size[0] < 2560  # libjpeg really downscaled


def test_centre_crop_view(photos):
    data = _jpeg(photos[0])
    v = CentreCropView(q=256, crop=224, draft=False)(data)
    ref = Image.open(io.BytesIO(data)).convert("RGB")
    ref = ref.resize((round(640 * 256 / 427), 256), Image.BILINEAR)
    w = ref.size[0]
    ref = np.asarray(ref)[16:240, (w - 224) // 2:(w - 224) // 2 + 224]
    np.testing.assert_array_equal(v.permute(1, 2, 0).numpy(), ref)


def test_train_crop_is_the_crop_of_the_image_rescaled_to_s(photos):
    """The window-only resample is the crop of the image rescaled to S, within a pixel of the drawn position.

    Reference: Pillow's bilinear resize of the exact box where the plan says the crop lies (the
    window's pixel grid is a fraction of a pixel off the full image's); S = the smaller side: a plain slice.
    """
    data = _jpeg(photos[1])
    img = decode_rgb(data)
    w, h = img.size
    for s in (256, 300, 427, 512):  # downscaling, no rescale (the photo's smaller side) and upscaling
        aug = TrainAugment(scale=TrainScale(s_min=s, s_max=s), crop=224, flip=False, draft=False)
        big_w, big_h = round(w * s / min(w, h)), s
        for k in range(4):
            got, _ = aug(data, sample_rng(0, 1, f"k{s}/{k}"))
            got = got.permute(1, 2, 0).numpy().astype(int)
            rng = sample_rng(0, 1, f"k{s}/{k}")
            x, y = int(rng.integers(0, big_w - 223)), int(rng.integers(0, big_h - 223))  # the plan's draws
            xf, yf = aug.plan((w, h), s, sample_rng(0, 1, f"k{s}/{k}")).lands_at
            assert abs(xf - x) <= 1 and abs(yf - y) <= 1, (s, x, y, xf, yf)
            if s == 427:
                np.testing.assert_array_equal(got, np.asarray(img)[y:y + 224, x:x + 224])
                continue
            sx, sy = w / big_w, h / big_h
            ref = img.resize((224, 224), Image.BILINEAR, box=(xf * sx, yf * sy, (xf + 224) * sx, (yf + 224) * sy))
            diff = np.abs(got - np.asarray(ref).astype(int))
            assert diff.max() <= 6 and diff.mean() < 0.3, (s, diff.max(), diff.mean())
