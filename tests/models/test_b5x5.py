"""Section 4.1's shallow control net B-5x5 and Section 2.3's receptive-field argument."""

from __future__ import annotations

import torch

from pipeline.models import (
    NETS,
    ModelConfig,
    build_model,
    count_params,
    init_from_net_a,
    init_weights,
    net_complexity,
    receptive_field,
)


def _hand_count(classes: int = 1000) -> int:
    """B-5x5 by hand: five 5x5 convs 3-64-128-256-512-512 (weights + biases), then 7*7*512-4096-4096-classes."""
    chans = [3, 64, 128, 256, 512, 512]
    conv = sum(5 * 5 * cin * cout + cout for cin, cout in zip(chans, chans[1:], strict=False))
    fc = (7 * 7 * 512 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * classes + classes)
    return conv + fc


def test_b5x5_parameter_count_equals_hand_computation():
    assert _hand_count() == 134_503_528
    with torch.device("meta"):
        m = build_model(config="B-5x5")
    assert count_params(m) == _hand_count() == net_complexity(m.cfg)["params"]
    assert net_complexity(m.cfg)["weight_layers"] == 8
    with torch.device("meta"):
        assert count_params(build_model(config="B-5x5", num_classes=10)) == _hand_count(10)


def test_b5x5_is_b_with_each_pair_of_3x3_replaced_by_one_5x5():
    m = build_model(config="B-5x5", width=0.125, crop=64, fc_width=32, num_classes=7)
    convs = [x for x in m.features if isinstance(x, torch.nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(5, 5)] * 5 and [c.padding for c in convs] == [(2, 2)] * 5
    b_out = [c for c in NETS["B"].layers if isinstance(c, int)][1::2]  # the second layer of each pair of B
    assert [c.out_channels for c in convs] == [round(c / 8) for c in b_out]
    assert NETS["B-5x5"].conv_names == ["conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"]
    assert receptive_field("B-5x5") == receptive_field("B") == 140


def test_b5x5_dense_and_crop_forward():
    torch.manual_seed(0)
    m = init_weights(build_model(config="B-5x5", width=0.125, crop=64, fc_width=32, num_classes=7), "glorot", seed=0)
    m.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        crop, dense = m(x), m.forward_dense(x)
        assert crop.shape == (2, 7) and dense.shape == (2, 7, 1, 1)
        assert (crop - dense[:, :, 0, 0]).abs().max() <= 1e-5
        assert m.forward_dense(torch.randn(1, 3, 128, 96)).shape == (1, 7, 3, 2)


def test_receptive_fields_by_hand():
    # conv3 adds 2 x stride, a 2x2/2 pool 1 x stride and doubles it: A = 3, +1, +4, +2, +8+8, +4, +16+16, +8, +32+32
    assert receptive_field("A") == 3 + 1 + 4 + 2 + 8 + 8 + 4 + 16 + 16 + 8 + 32 + 32 == 134
    assert receptive_field("D") == 196 and receptive_field("E") == 252
    assert receptive_field("C") == receptive_field("B")  # 1x1 layers add nothing (Section 2.3)


def test_start_from_a_into_b5x5_copies_only_the_fc_layers():
    small = dict(width=0.125, crop=64, fc_width=32, num_classes=7)
    a = init_weights(build_model(config="A", **small), "glorot", seed=1)
    s = init_weights(build_model(config="B-5x5", **small), "glorot", seed=2)
    before = {k: v.weight.clone() for k, v in s.named_weight_layers().items()}
    assert init_from_net_a(s, a) == list(NETS["B-5x5"].from_a) == ["fc6", "fc7", "fc8"]
    src = a.named_weight_layers()
    for name, layer in s.named_weight_layers().items():
        want = src[name].weight if name.startswith("fc") else before[name]
        assert torch.equal(layer.weight, want), name
    assert ModelConfig(config="B-5x5").feature_size == 7
