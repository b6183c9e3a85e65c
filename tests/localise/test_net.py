"""The localisation net: SCR / PCR heads on a classification net, dense box maps (paper A.1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.errors import UserError
from pipeline.localise.net import box_map_to_corners, box_outputs, head_outputs, load_localiser, localisation_net
from pipeline.models import build_model, init_weights, save_checkpoint

SMALL = dict(config="A", width=0.125, crop=64, fc_width=32, num_classes=10, dropout=0.0)


@pytest.fixture(scope="module")
def classifier():
    return init_weights(build_model(**SMALL), seed=0).eval()


@pytest.mark.parametrize("head,outputs,slots", [("scr", 4, 1), ("pcr", 40, 10)])
def test_scr_and_pcr_output_shapes(classifier, head, outputs, slots):
    net = localisation_net(classifier, head, seed=1).eval()
    assert head_outputs(head, 10) == outputs
    assert net.cfg.num_classes == outputs and net.cfg.config == "A" and net.cfg.crop == 64
    x = torch.randn(3, 3, 64, 64)
    out = net(x)
    assert out.shape == (3, outputs)
    assert box_outputs(out, head, 10).shape == (3, slots, 4)
    dense = net.forward_dense(torch.randn(2, 3, 128, 160))  # map (128-64)/32+1 = 3 by (160-64)/32+1 = 4
    assert dense.shape == (2, outputs, 3, 4)
    bm = box_outputs(dense, head, 10)
    assert bm.shape == (2, 3, 4, slots, 4)
    # the map's boxes are the FC outputs reshaped: location (i, j), slot c, coordinate k = channel 4c + k
    np.testing.assert_array_equal(bm[1, 2, 3].detach().numpy(), dense[1, :, 2, 3].view(slots, 4).detach().numpy())
    with pytest.raises(UserError):
        box_outputs(out, "pcr" if head == "scr" else "scr", 10)


def test_rehead_copies_all_layers_but_the_last(classifier):
    net = localisation_net(classifier, "pcr", seed=1)
    a, b = classifier.state_dict(), net.state_dict()
    for k in a:
        if k.startswith("classifier.6."):
            assert a[k].shape != b[k].shape
        else:
            assert torch.equal(a[k], b[k]), k
    assert torch.count_nonzero(b["classifier.6.bias"]) == 0
    assert 0.005 < b["classifier.6.weight"].std() < 0.02  # fresh N(0, 1e-2^2)
    # same seed, same fresh layer
    assert torch.equal(localisation_net(classifier, "pcr", seed=1).state_dict()["classifier.6.weight"],
                       b["classifier.6.weight"])
    # dropout has no weights: fine-tuning may change it
    assert localisation_net(classifier, "scr", dropout=0.25).cfg.dropout == 0.25 and net.cfg.dropout == 0.0


def test_dense_application_agrees_with_the_crop_form(classifier):
    net = localisation_net(classifier, "scr", seed=2).eval()
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        dense = net.forward_dense(x)  # 2 x 2 locations, windows at 0 and 32
        for i in range(2):
            for j in range(2):
                crop = net(x[:, :, 32 * i:32 * i + 64, 32 * j:32 * j + 64])
                torch.testing.assert_close(dense[0, :, i, j], crop[0], rtol=1e-4, atol=1e-5)


def test_box_map_to_corners_by_hand():
    bm = np.tile(np.array([0.5, 0.5, 1.0, 1.0]), (2, 3, 1, 1))  # whole window everywhere
    c = box_map_to_corners(bm, crop=64, scale=(1.0, 1.0))
    np.testing.assert_allclose(c[0, 0, 0], [0, 0, 63, 63])
    np.testing.assert_allclose(c[1, 2, 0], [64, 32, 127, 95])
    # image rescaled by 2 before the net: boxes come back at half size (continuous edges)
    c2 = box_map_to_corners(bm, crop=64, scale=(2.0, 2.0))
    np.testing.assert_allclose(c2[1, 2, 0], [32, 16, 63, 47])


def test_load_localiser_refuses_a_classification_checkpoint(classifier, tmp_path):
    save_checkpoint(tmp_path / "cls.pt", classifier, meta={"classes": [str(i) for i in range(10)]})
    with pytest.raises(UserError, match="not a localisation checkpoint"):
        load_localiser(tmp_path / "cls.pt")
    net = localisation_net(classifier, "pcr", seed=0)
    save_checkpoint(tmp_path / "bad.pt", net, meta={"classes": ["a", "b"], "localise": {"head": "pcr"}})
    with pytest.raises(UserError, match="40 outputs, expected 8"):
        load_localiser(tmp_path / "bad.pt")
    save_checkpoint(tmp_path / "loc.pt", net, meta={"classes": [str(i) for i in range(10)],
                                                    "localise": {"head": "pcr", "fine_tune": "fc"},
                                                    "train_scale": {"s_min": 72, "s_max": 72}})
    model, info = load_localiser(tmp_path / "loc.pt")
    assert info.head == "pcr" and info.train_scale == 72 and info.label == "PCR, 1st and 2nd FC"


def test_dense_windows_start_at_the_centred_origin():
    """The dense forms centre their windows (side mod 32 cut evenly): boxes move by that origin, in original pixels."""
    bm = np.zeros((1, 2, 1, 4))
    bm[..., :] = (0.5, 0.5, 1.0, 1.0)  # each window's own full box
    plain = box_map_to_corners(bm, 32, (0.5, 0.5))
    moved = box_map_to_corners(bm, 32, (0.5, 0.5), origin=(5, 2))
    np.testing.assert_allclose(moved - plain, np.broadcast_to([10, 4, 10, 4], plain.shape))
