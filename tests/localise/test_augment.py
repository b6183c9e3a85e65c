"""Training crops move the boxes with the image: rescale, crop, flip (paper 3.1, A.1).

The check is the image itself: a solid rectangle painted on a real photo must land where the
transformed box says, in every random crop and flip.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipeline.localise.augment import box_crop, centre_crop, choose_target, targets
from pipeline.localise.boxes import corners_to_cxcywh, ground_truth
from pipeline.localise.protocols import crop_box_in_image

GREEN = (0, 255, 0)


@pytest.fixture(scope="module")
def painted(photos):
    img = photos[0].copy()  # china.jpg, 640 x 427
    img[100:221, 250:401] = GREEN  # pixels x 250..400, y 100..220
    gt = ground_truth([{"xmin": 250, "ymin": 100, "xmax": 400, "ymax": 220, "name": "obj"}], 640, 427, ["obj"])
    return Image.fromarray(img), gt


def _mask_extent(x):
    a = x.permute(1, 2, 0).numpy().astype(int)
    m = (a[..., 1] > 200) & (a[..., 0] < 60) & (a[..., 2] < 60)
    ys, xs = np.nonzero(m)
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()])


def test_random_crops_and_flips_move_the_box_with_the_pixels(painted):
    img, gt = painted
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(40):
        bc = box_crop(img, gt, s=256, crop=224, rng=rng, flip=True)
        assert bc.image.shape == (3, 224, 224)
        box = bc.boxes[0]
        inside = np.clip(box, 0, 223)
        if inside[2] - inside[0] < 4 or inside[3] - inside[1] < 4:
            continue  # object (nearly) cropped away
        extent = _mask_extent(bc.image)
        np.testing.assert_allclose(extent, inside, atol=1.5)  # bilinear resampling blurs the edge by ~1 px
        checked += 1
    assert checked >= 30


def test_targets_are_normalised_by_the_crop_and_may_extend_past_it():
    class BC:
        boxes = np.array([[-20.0, 10, 49, 59], [100, 100, 109, 109], [0, 0, 63, 63]])
        labels = np.array([1, 1, 0])

    t, m = targets(BC, 64, 3)  # PCR: one target per class present
    assert m.tolist() == [1, 1, 0]
    np.testing.assert_allclose(t[0], corners_to_cxcywh(BC.boxes[2], 64, 64))
    np.testing.assert_allclose(t[1], corners_to_cxcywh(BC.boxes[0], 64, 64))  # the visible one of class 1
    assert t[1][0] - t[1][2] / 2 < 0  # extends past the left edge, not clipped
    t1, m1 = targets(BC, 64, 1)  # SCR: the most visible box over all classes
    assert m1.tolist() == [1]
    np.testing.assert_allclose(t1[0], corners_to_cxcywh(BC.boxes[2], 64, 64))
    assert choose_target(np.array([[0, 0, 9, 9], [27, 27, 36, 36]], dtype=float), 64) == 1  # tie: nearer the centre


def test_centre_crop_prediction_maps_back_to_the_image(painted):
    img, gt = painted
    bc, scale, off = centre_crop(img, gt, q=256, crop=224)
    assert bc.image.shape == (3, 224, 224)
    np.testing.assert_allclose(_mask_extent(bc.image), np.clip(bc.boxes[0], 0, 223), atol=1.5)
    # a perfect prediction in the crop's frame comes back as the ground-truth box
    pred = corners_to_cxcywh(bc.boxes[0], 224, 224)
    back = crop_box_in_image(pred, 224, scale, off, img.size)
    np.testing.assert_allclose(back, gt.boxes[0], atol=1e-6)
