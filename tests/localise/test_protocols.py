"""The dense protocol (Table 9) against independent computations on a real photo."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from pipeline.evaluate.protocols import dense_evaluate, rescale_batch
from pipeline.localise.merge import MergeConfig
from pipeline.localise.net import LocaliserInfo, localisation_net
from pipeline.localise.protocols import DenseSettings, LocNet, Rater, Runner, class_maps, dense_localise
from pipeline.models import build_model, init_weights
from pipeline.preprocess import Normalization

NORM = Normalization(mean=(120.0, 115.0, 100.0), std=(60.0, 60.0, 60.0))
CLASSES = [f"c{i}" for i in range(6)]


@pytest.fixture(scope="module")
def classifier():
    return init_weights(build_model(config="A", width=0.125, fc_width=16, crop=32, num_classes=6, dropout=0.0),
                        "glorot", seed=3).eval()


@pytest.fixture(scope="module")
def image(photos):
    return Image.fromarray(photos[0]).resize((150, 100), Image.BILINEAR)  # Q=64 -> 96 x 64


def _constant_net(classifier, box, head="pcr"):
    """A localisation net whose every location predicts ``box`` (cx, cy, w, h) of its window, for every class."""
    net = localisation_net(classifier, head, seed=0).eval()
    with torch.no_grad():
        net.classifier[6].weight.zero_()
        net.classifier[6].bias.copy_(torch.tensor(box, dtype=torch.float32).repeat(net.cfg.num_classes // 4))
    return LocNet(net, LocaliserInfo(head, CLASSES, "all", 64, {}), NORM, [64])


def test_dense_posteriors_are_the_evaluate_stage_s(classifier, image):
    post, maps = class_maps(Rater(classifier, NORM), [image, image.transpose(Image.FLIP_LEFT_RIGHT)], 64, Runner(),
                            flip=True)
    x = rescale_batch([image, image.transpose(Image.FLIP_LEFT_RIGHT)], 64, NORM)
    np.testing.assert_allclose(post, dense_evaluate(classifier, x, flip=True).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(post[0], post[1], rtol=1e-5, atol=1e-6)  # flip-averaged: the same for the mirror image
    with torch.no_grad():
        ref = F.softmax(classifier.forward_dense(x), dim=1).numpy()
    np.testing.assert_allclose(maps, ref, rtol=1e-5, atol=1e-6)
    assert maps.shape == (2, 6, 2, 3)


def test_each_class_gets_its_best_rated_window(classifier, image):
    """Every location predicts its whole window; windows do not overlap, so nothing merges and the guess
    for a class is the window where the classifier scores that class highest."""
    net = _constant_net(classifier, [0.5, 0.5, 1.0, 1.0])
    [res] = dense_localise([net], Rater(classifier, NORM), [image], Runner(), DenseSettings(MergeConfig(), flip=False))
    x = rescale_batch([image], 64, NORM)
    with torch.no_grad():
        smap = F.softmax(classifier.forward_dense(x), dim=1)[0].numpy()  # 6 x 2 x 3
        post = F.softmax(classifier.forward_dense(x).mean(dim=(2, 3)), dim=1)[0].numpy()
    assert res.top == [int(c) for c in np.argsort(-post, kind="stable")[:5]]
    sx, sy = 96 / 150, 64 / 100
    for c, box, score in res.guesses["net0"]:
        i, j = np.unravel_index(np.argmax(smap[c]), smap[c].shape)
        window = np.array([32 * j, 32 * i, 32 * j + 32, 32 * i + 32], dtype=float)  # continuous edges, rescaled image
        expect = [window[0] / sx, window[1] / sy, min(window[2] / sx - 1, 149), min(window[3] / sy - 1, 99)]
        np.testing.assert_allclose(box, expect, atol=1e-6)
        assert score == pytest.approx(smap[c, i, j], rel=1e-5)
    assert res.n_boxes["net0"] == 5 * 6  # 5 classes x 6 locations


def test_boxes_of_several_nets_are_united_before_merging(classifier, image):
    a = _constant_net(classifier, [0.5, 0.5, 1.0, 1.0])
    b = _constant_net(classifier, [0.5, 0.5, 0.9, 0.9], head="scr")  # IoU 0.81 with a's box of the same window
    [res] = dense_localise([a, b], Rater(classifier, NORM), [image], Runner(), DenseSettings(k=3, flip=False))
    assert res.n_boxes["fusion"] == res.n_boxes["net0"] + res.n_boxes["net1"] == 2 * 3 * 6
    for (c, _box, score), (c0, _, s0), (c1, _, s1) in zip(
        res.guesses["fusion"], res.guesses["net0"], res.guesses["net1"], strict=False
    ):
        assert c == c0 == c1
        assert score == pytest.approx(s0 + s1, rel=1e-5)  # the two nets' boxes of the best window merged
