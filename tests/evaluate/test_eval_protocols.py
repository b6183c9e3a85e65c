"""The test protocols of paper 3.2 against independent computations on real photos."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from pipeline.errors import UserError
from pipeline.evaluate import classify, crop_grid, dense_evaluate, fuse, multi_crop, rescale_batch
from pipeline.models import load_model
from pipeline.preprocess import Normalization, isotropic_resize, normalize, pil_to_tensor

NORM = Normalization(mean=(72.9,) * 3, std=(90.0,) * 3)


@pytest.fixture(scope="module")
def net(ckpt):
    return load_model(ckpt)[0]


@pytest.fixture(scope="module")
def china(photos) -> Image.Image:
    return Image.fromarray(photos[0])


def test_dense_at_crop_size_equals_the_plain_forward(net, china):
    x = rescale_batch([china.crop((100, 50, 400, 350))], 32, NORM)  # square -> exactly 32 x 32
    assert x.shape[-2:] == (32, 32)
    with torch.no_grad():
        ref = torch.softmax(net(x), 1)
        ref_flip = torch.softmax(net(x.flip(-1)), 1)
    torch.testing.assert_close(dense_evaluate(net, x, flip=False), ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dense_evaluate(net, x), (ref + ref_flip) / 2, rtol=1e-5, atol=1e-6)


def test_dense_averages_the_score_map_before_softmax(net, china):
    x = rescale_batch([china], 64, NORM)  # 64 x 96: a 2 x 3... class score map
    with torch.no_grad():
        scores = net.forward_dense(x)
    assert scores.shape[-2:] != (1, 1)
    expected = torch.softmax(scores.mean(dim=(2, 3)), 1)
    torch.testing.assert_close(dense_evaluate(net, x, flip=False), expected)


def test_grid_is_5x5_and_reaches_the_corners():
    g = crop_grid(427, 640, 224)
    assert len(g) == 25 == len(set(g))
    tops, lefts = sorted({t for t, _ in g}), sorted({l for _, l in g})
    assert tops == [0, 51, 102, 152, 203] and lefts == [0, 104, 208, 312, 416]
    assert {(0, 0), (0, 640 - 224), (427 - 224, 0), (427 - 224, 640 - 224)} <= set(g)
    # mirror-symmetric: the crops of the flipped image are the flipped crops
    assert sorted(640 - 224 - l for l in lefts) == lefts
    assert crop_grid(32, 32, 32) == [(0, 0)] * 25
    with pytest.raises(UserError, match="smaller than the crop"):
        crop_grid(31, 64, 32)


def test_multi_crop_equals_50_crops_through_the_fc_net(net, china):
    """Independent reference: torchvision crops of the rescaled image, each through ``forward``."""
    img = isotropic_resize(china, 48)  # 48 x 72
    x = normalize(pil_to_tensor(img)[None], NORM)
    h, w = x.shape[-2:]
    probs = []
    with torch.no_grad():
        for t in np.linspace(0, h - 32, 5):
            for l in np.linspace(0, w - 32, 5):
                crop = TF.crop(x, int(np.floor(t + 0.5)), int(np.floor(l + 0.5)), 32, 32)
                probs += [torch.softmax(net(crop), 1), torch.softmax(net(TF.hflip(crop)), 1)]
    ref = torch.cat(probs).mean(0, keepdim=True)
    assert len(probs) == 50
    for crop_batch in (1, 7, 256):  # chunking never changes the result
        torch.testing.assert_close(multi_crop(net, x, crop_batch=crop_batch), ref, rtol=1e-5, atol=1e-6)


def test_corner_crops_are_the_image_corners(net, china):
    x = normalize(pil_to_tensor(isotropic_resize(china, 48))[None], NORM)
    seen = []
    hook = net.features[0].register_forward_pre_hook(lambda m, a: seen.append(a[0].clone()))
    try:
        multi_crop(net, x, flip=False, crop_batch=1)
    finally:
        hook.remove()
    crops = torch.cat(seen)
    assert len(crops) == 25
    for i, (t, l) in ((0, (0, 0)), (4, (0, 40)), (20, (16, 0)), (24, (16, 40))):
        torch.testing.assert_close(crops[i], x[0, :, t:t + 32, l:l + 32])


@pytest.mark.parametrize("method", ["dense", "multicrop"])
def test_flip_averaging_makes_the_mirror_image_score_the_same(net, china, method):
    x = rescale_batch([china], 48, NORM)
    f = (lambda z, **k: dense_evaluate(net, z, **k)) if method == "dense" else (lambda z, **k: multi_crop(net, z, **k))
    p, p_mirror = f(x), f(x.flip(-1))
    torch.testing.assert_close(p, p_mirror, rtol=1e-5, atol=1e-6)
    one, other = f(x, flip=False), f(x.flip(-1), flip=False)
    assert not torch.allclose(one, other, atol=1e-4)  # the flip really matters for this net
    torch.testing.assert_close(p, (one + other) / 2, rtol=1e-5, atol=1e-6)


def test_posteriors_sum_to_one_and_batching_is_per_image(net, photos):
    imgs = [Image.fromarray(p) for p in photos]  # same size: one batch
    x = rescale_batch(imgs, 40, NORM)
    for f in (dense_evaluate, multi_crop):
        together = f(net, x)
        torch.testing.assert_close(together.sum(1), torch.ones(2))
        alone = torch.cat([f(net, x[i:i + 1]) for i in range(2)])
        torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)
    with pytest.raises(UserError, match="different sizes"):
        rescale_batch([imgs[0], imgs[0].crop((0, 0, 300, 300))], 40, NORM)


def test_multi_scale_combination_and_fusion(net, china):
    qs = [32, 40, 48]
    per_q = {m: [classify(net, china, [q], NORM, m) for q in qs] for m in ("dense", "multicrop")}
    dense, crops = np.mean(per_q["dense"], 0), np.mean(per_q["multicrop"], 0)
    np.testing.assert_allclose(classify(net, china, qs, NORM, "dense"), dense, rtol=1e-6)
    both = classify(net, china, qs, NORM, "both")
    np.testing.assert_allclose(both, (dense + crops) / 2, rtol=1e-6)
    assert abs(both.sum() - 1) < 1e-5
    np.testing.assert_allclose(fuse([both, both]), both)
    with pytest.raises(UserError, match="below the crop"):
        classify(net, china, [24], NORM)
