"""The ILSVRC localisation error on hand-made examples (docs/formats.md 4, devkit eval_clsloc.m)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.localise.boxes import ground_truth, image_classification_error, image_localisation_error

CLASSES = ["a", "b", "c", "d", "e", "f", "g"]


def _gt(*boxes):
    return ground_truth([{"xmin": x1, "ymin": y1, "xmax": x2, "ymax": y2, "name": n} for n, x1, y1, x2, y2 in boxes],
                        100, 100, CLASSES)


def test_one_class_image_hand_example():
    gt = _gt(("c", 10, 10, 49, 49), ("c", 60, 60, 89, 89))  # two objects of class c (index 2)
    good = np.array([12, 12, 51, 51])      # IoU with the first: 38*38 / (1600+1600-1444) = 0.822
    half = np.array([10, 10, 49, 29])      # IoU exactly 0.5 with the first: counts (>= 0.5)
    bad = np.array([0, 0, 99, 99])         # IoU 0.16 with the first, 0.09 with the second
    assert image_localisation_error([(2, good)], gt) == 0
    assert image_localisation_error([(2, half)], gt) == 0
    assert image_localisation_error([(2, bad)], gt) == 1
    assert image_localisation_error([(3, good)], gt) == 1                  # right box, wrong class
    assert image_localisation_error([(2, np.array([61, 61, 88, 88]))], gt) == 0  # any GT box of the class
    # the right guess in 5th place counts at k=5, not at k=4 or k=1
    guesses = [(0, good), (1, good), (3, good), (4, good), (2, good), (5, good)]
    assert image_localisation_error(guesses, gt, k=5) == 0
    assert image_localisation_error(guesses, gt, k=4) == 1
    # right class with a wrong box, then the same class again with a right box: still correct
    assert image_localisation_error([(2, bad), (2, good)], gt) == 0


def test_several_classes_average_like_the_devkit():
    gt = _gt(("a", 0, 0, 19, 19), ("b", 50, 50, 79, 79))
    a_box, b_box = np.array([0, 0, 19, 19]), np.array([50, 50, 79, 79])
    assert image_localisation_error([(0, a_box), (1, b_box)], gt) == 0
    assert image_localisation_error([(0, a_box), (1, a_box)], gt) == 0.5
    assert image_localisation_error([(3, a_box)], gt) == 1
    assert image_classification_error([0, 3, 4], [0, 1]) == 0.5
    assert image_classification_error([0, 3, 4, 5, 1], [0, 1], k=5) == 0
    with pytest.raises(ValueError):
        image_localisation_error([(0, a_box)], _gt())


def test_error_averaged_over_images_matches_a_hand_count():
    gt = _gt(("a", 10, 10, 40, 40))
    right, wrong = np.array([11, 11, 41, 41]), np.array([60, 60, 90, 90])
    errs = [
        image_localisation_error(g, gt) for g in ([(0, right)], [(0, wrong)], [(1, right)], [(1, wrong), (0, right)])
    ]
    assert errs == [0, 1, 1, 0]
    assert np.mean(errs) == 0.5
