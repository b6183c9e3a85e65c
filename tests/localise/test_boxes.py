"""Boxes: IoU with inclusive widths (devkit), conversions, ground-truth validation (docs/formats.md 4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from pipeline.localise.boxes import (
    centre_quarter_box,
    clip_corners,
    corners_to_cxcywh,
    crop_corners,
    cxcywh_to_corners,
    flip_corners,
    ground_truth,
    iou,
    iou_matrix,
    scale_corners,
    whole_image_box,
)

CLASSES = ["cat", "dog"]


def test_iou_hand_cases_inclusive_widths():
    a = [0, 0, 9, 9]  # 10 x 10 pixels
    assert iou(a, a) == 1.0
    # 5 shared columns (5..9) x 10 rows = 50; union 100 + 100 - 50
    assert iou(a, [5, 0, 14, 9]) == pytest.approx(50 / 150)
    # boxes sharing one pixel column intersect (inclusive widths): 10 / 190
    assert iou(a, [9, 0, 18, 9]) == pytest.approx(10 / 190)
    # containment: 5 x 5 inside 10 x 10
    assert iou(a, [2, 2, 6, 6]) == pytest.approx(25 / 100)
    assert iou([2, 2, 6, 6], a) == pytest.approx(25 / 100)
    # one-pixel boxes have area 1, not 0
    assert iou([3, 3, 3, 3], [3, 3, 3, 3]) == 1.0


def test_iou_no_overlap_is_minus_one():
    assert iou([0, 0, 9, 9], [10, 0, 19, 9]) == -1.0  # adjacent, no shared pixel
    assert iou([0, 0, 9, 9], [50, 50, 60, 60]) == -1.0
    assert iou([0, 0, 9, 9], [0, 10, 9, 19]) == -1.0


def test_iou_matches_torchvision_on_exclusive_corners():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 80, size=(30, 2))
    wh = rng.uniform(1, 40, size=(30, 2))
    a = np.concatenate([xy, xy + wh], axis=1)  # inclusive corners
    ref = box_iou(torch.tensor(a[:15] + [0, 0, 1, 1]), torch.tensor(a[15:] + [0, 0, 1, 1])).numpy()
    ours = iou_matrix(a[:15], a[15:])
    overlapping = ref > 0
    np.testing.assert_allclose(ours[overlapping], ref[overlapping], rtol=1e-9)
    assert (ours[~overlapping] == -1).all()


def test_corner_conversions_round_trip_and_whole_frame():
    np.testing.assert_allclose(corners_to_cxcywh([0, 0, 99, 49], 100, 50), [0.5, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(cxcywh_to_corners([0.5, 0.5, 1.0, 1.0], 100, 50), [0, 0, 99, 49])
    c = np.array([[3.0, 7.0, 20.0, 40.0], [-5.0, 10.0, 120.0, 11.0]])
    np.testing.assert_allclose(cxcywh_to_corners(corners_to_cxcywh(c, 64, 32), 64, 32), c)
    # a negative predicted width gives a one-pixel box, never min > max
    b = cxcywh_to_corners([0.5, 0.5, -0.2, 0.1], 10, 10)
    assert b[2] >= b[0] and b[3] >= b[1]


def test_scale_crop_flip_and_baselines():
    np.testing.assert_allclose(scale_corners([0, 0, 9, 9], 2, 3), [0, 0, 19, 29])
    np.testing.assert_allclose(crop_corners([10, 20, 30, 40], 5, 8), [5, 12, 25, 32])
    np.testing.assert_allclose(flip_corners([0, 0, 9, 9], 100), [90, 0, 99, 9])
    np.testing.assert_allclose(flip_corners(flip_corners([3, 4, 17, 9], 64), 64), [3, 4, 17, 9])
    np.testing.assert_allclose(whole_image_box(40, 20), [0, 0, 39, 19])
    np.testing.assert_allclose(centre_quarter_box(40, 20), [10, 5, 29, 14])
    np.testing.assert_allclose(clip_corners([-3, 2, 50, 30], 40, 20), [0, 2, 39, 19])


def test_ground_truth_clips_and_skips_with_reasons():
    boxes = [
        {"xmin": 5, "ymin": 5, "xmax": 20, "ymax": 20, "name": "dog"},          # fine
        {"xmin": -10, "ymin": 30, "xmax": 15, "ymax": 80, "name": "cat"},       # partly outside: clipped
        {"xmin": 100, "ymin": 5, "xmax": 120, "ymax": 20, "name": "cat"},       # entirely outside
        {"xmin": 30, "ymin": 5, "xmax": 10, "ymax": 20, "name": "cat"},         # min > max
        {"xmin": 1, "ymin": 1, "xmax": 2, "ymax": float("nan"), "name": "cat"},  # non-finite
        {"xmin": 1, "ymin": 1, "xmax": 5, "ymax": 5, "name": "zebra"},          # unknown class, no image label
        {"xmin": 1, "ymin": 1, "ymax": 5, "name": "cat"},                       # missing coordinate
    ]
    gt = ground_truth(boxes, 64, 48, CLASSES)
    assert gt.labels.tolist() == [1, 0]
    np.testing.assert_allclose(gt.boxes, [[5, 5, 20, 20], [0, 30, 15, 47]])
    assert gt.clipped == 1
    assert len(gt.skipped) == 5
    joined = " | ".join(gt.skipped)
    for reason in ("entirely outside", "min > max", "non-finite", "unknown class 'zebra'", "missing"):
        assert reason in joined
    assert gt.classes == [0, 1]
    np.testing.assert_allclose(gt.of_class(1), [[5, 5, 20, 20]])


def test_ground_truth_name_falls_back_to_the_image_label():
    # ILSVRC XML sometimes names a box with a human label instead of the wnid: the image's class then
    gt = ground_truth([{"xmin": 1, "ymin": 1, "xmax": 5, "ymax": 5, "name": "a dog"}], 10, 10, CLASSES, label=1)
    assert gt.labels.tolist() == [1] and not gt.skipped
    assert ground_truth(None, 10, 10, CLASSES).classes == []


def test_classes_present_only_as_difficult_objects_are_not_required():
    gt = ground_truth([{"xmin": 1, "ymin": 1, "xmax": 9, "ymax": 9, "name": "cat", "difficult": True},
                       {"xmin": 20, "ymin": 20, "xmax": 29, "ymax": 29, "name": "dog", "difficult": "0"},
                       {"xmin": 40, "ymin": 1, "xmax": 49, "ymax": 9, "name": "dog", "difficult": 1}], 64, 64, CLASSES)
    assert gt.difficult.tolist() == [True, False, True]
    assert gt.classes == [1]              # cat only appears as a difficult object (VOC's label 0)
    assert len(gt.of_class(1)) == 2       # a guess may still match the difficult dog
