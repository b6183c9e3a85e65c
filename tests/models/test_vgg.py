"""The model zoo against Table 2 and torchvision (paper Section 2, 3.2)."""

from __future__ import annotations

import pytest
import torch
import torchvision

from pipeline.errors import UserError
from pipeline.models import (
    NET_A_LAYERS,
    NETS,
    ModelConfig,
    build_model,
    count_flops,
    count_params,
    import_torchvision_weights,
    init_from_net_a,
    init_weights,
    load_model,
    net_complexity,
    save_checkpoint,
)

TABLE2 = {"A": 132_863_336, "A-LRN": 132_863_336, "B": 133_047_848, "C": 133_638_952,
          "D": 138_357_544, "E": 143_667_240, "B-5x5": 134_503_528}
SMALL = dict(width=0.125, crop=64, fc_width=64, num_classes=10)


@pytest.mark.parametrize("name", list(NETS))
def test_parameter_counts_reproduce_table2(name):
    with torch.device("meta"):
        assert count_params(build_model(config=name)) == TABLE2[name]


def test_vgg16_gflops_about_30_9():
    assert abs(count_flops(ModelConfig(config="D")) / 1e9 - 30.94) < 0.05


def test_layer_structure_matches_table1():
    c = build_model(config="C", **SMALL)
    kernels = [m.kernel_size[0] for m in c.features if isinstance(m, torch.nn.Conv2d)]
    assert kernels == [3, 3, 3, 3, 3, 3, 1, 3, 3, 1, 3, 3, 1]
    lrn = build_model(config="A-LRN", **SMALL)
    assert isinstance(lrn.features[2], torch.nn.LocalResponseNorm)
    assert (lrn.features[2].size, lrn.features[2].alpha, lrn.features[2].beta, lrn.features[2].k) == (
        5,
        1e-4,
        0.75,
        2.0,
    )
    for name in NETS:
        m = build_model(config=name, **SMALL)
        assert sum(isinstance(x, torch.nn.MaxPool2d) for x in m.features) == 5
        assert net_complexity(m.cfg)["weight_layers"] == {"A": 11, "A-LRN": 11, "B": 13, "C": 16, "D": 16, "E": 19,
                                                        "B-5x5": 8}[name]
        assert NETS[name].weight_layers == len(m.named_weight_layers())


@pytest.mark.parametrize("channels", [16, 64])
def test_lrn_layer_equals_torchs_local_response_norm(channels):
    """A-LRN's faster layer computes torch's LocalResponseNorm (Caffe's LRN), forward and backward."""
    from pipeline.models.vgg import LRN_ALPHA, LRN_BETA, LRN_K, LRN_SIZE, ChannelLRN

    g = torch.Generator().manual_seed(channels)
    x = (torch.randn(4, channels, 9, 7, generator=g) * 40).requires_grad_()  # alpha matters at this scale
    upstream = torch.randn(4, channels, 9, 7, generator=g)
    outs = []
    for layer in (torch.nn.LocalResponseNorm(LRN_SIZE, alpha=LRN_ALPHA, beta=LRN_BETA, k=LRN_K),
                  ChannelLRN(LRN_SIZE, alpha=LRN_ALPHA, beta=LRN_BETA, k=LRN_K)):
        x.grad = None
        y = layer(x)
        (y * upstream).sum().backward()
        outs.append((y.detach(), x.grad.clone()))
    (y_ref, g_ref), (y, gx) = outs
    assert (y_ref / x.detach()).std() > 1e-3  # the normalisation is not a constant factor here
    torch.testing.assert_close(y, y_ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(gx, g_ref, rtol=1e-5, atol=1e-6)
    x3 = torch.randn(2, channels, 5, generator=g)  # other ranks go through torch's own
    torch.testing.assert_close(ChannelLRN(LRN_SIZE)(x3), torch.nn.LocalResponseNorm(LRN_SIZE)(x3))


TV = {"A": "vgg11", "B": "vgg13", "D": "vgg16", "E": "vgg19"}
# Full-size nets take ~8 s each on two cores: two run by default, all eight with `pytest -m slow`.
TV_CASES = [pytest.param(n, bn, id=f"{n}-{'bn' if bn else 'plain'}",
                         marks=() if (n, bn) in {("A", False), ("D", True)} else pytest.mark.slow)
            for n in TV for bn in (False, True)]


def test_the_spec_names_torchvisions_nets():
    assert {n: spec.torchvision for n, spec in NETS.items() if spec.torchvision} == TV


@pytest.mark.parametrize("name,bn", TV_CASES)
def test_torchvision_weights_give_identical_outputs(name, bn, photo_batch, tmp_path):
    torch.manual_seed(0)
    tv = getattr(torchvision.models, TV[name] + ("_bn" if bn else ""))(weights=None).eval()
    if bn:  # non-trivial running statistics, so BN is really exercised
        for m in tv.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "tv.pth"
    torch.save(tv.state_dict(), path)
    ours = import_torchvision_weights(path, config=name)
    assert ours.cfg.batch_norm is bn and ours.cfg.num_classes == 1000 and ours.cfg.crop == 224
    x = photo_batch[:1]
    with torch.no_grad():
        ref, out = tv(x), ours(x)
        dense = ours.forward_dense(x).mean((2, 3))
    assert (ref - out).abs().max() <= 1e-5
    assert (ref - dense).abs().max() <= 1e-5


def test_torchvision_import_refuses_other_config(tmp_path):
    path = tmp_path / "tv.pth"
    torch.save(torchvision.models.vgg11(weights=None).state_dict(), path)
    with pytest.raises(UserError, match=r"config A \(22 tensors\), not D"):
        import_torchvision_weights(path, config="D")


@pytest.mark.parametrize("name", list(NETS))
def test_dense_form_equals_fc_form_at_crop_and_per_window(name):
    torch.manual_seed(1)
    m = init_weights(build_model(config=name, **SMALL), "glorot", seed=1).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (m(x) - m.forward_dense(x)[:, :, 0, 0]).abs().max() <= 1e-5
        assert (m.forward_features(x) - m.forward_features(x, dense=True)[:, :, 0, 0]).abs().max() <= 1e-5
        # a larger image: each position of the score map is the net applied to the window at
        # stride 32 -- not exactly (dense evaluation sees context through the padding), but the map
        # has the size the paper describes: (H/32 - crop/32 + 1) x (W/32 - crop/32 + 1)
        big = torch.randn(1, 3, 128, 96)
        assert m.forward_dense(big).shape == (1, 10, 3, 2)
        assert m.forward_features(big, dense=True).shape == (1, 64, 3, 2)


def test_fc_form_refuses_other_sizes():
    m = build_model(config="A", **SMALL)
    with pytest.raises(UserError, match="64x64"):
        m(torch.zeros(1, 3, 96, 64))
    with pytest.raises(UserError, match="smaller than the crop"):
        m.forward_dense(torch.zeros(1, 3, 32, 64))


def test_paper_init_statistics_and_glorot():
    m = init_weights(build_model(config="A", **SMALL), "paper", std=1e-2, seed=0)
    w = m.features[0].weight
    assert abs(w.std().item() - 1e-2) < 2e-3 and m.features[0].bias.abs().sum() == 0
    g = init_weights(build_model(config="A", **SMALL), "glorot", seed=0)
    lin = g.classifier[0]
    bound = (6.0 / (lin.in_features + lin.out_features)) ** 0.5
    assert lin.weight.abs().max() <= bound and lin.weight.abs().max() > 0.9 * bound


@pytest.mark.parametrize("deeper", ["B", "C", "D", "E"])
def test_start_from_net_a_copies_exactly_the_named_layers(deeper):
    a = init_weights(build_model(config="A", **SMALL), "glorot", seed=1)
    d = init_weights(build_model(config=deeper, **SMALL), "glorot", seed=2)
    before = {k: v.weight.clone() for k, v in d.named_weight_layers().items()}
    copied = init_from_net_a(d, a)
    assert copied == list(NET_A_LAYERS)
    src = a.named_weight_layers()
    for name, layer in d.named_weight_layers().items():
        if name in NET_A_LAYERS:
            assert torch.equal(layer.weight, src[name].weight), name
        else:
            assert torch.equal(layer.weight, before[name]), name


def test_start_from_net_a_shape_mismatch_is_a_clear_error():
    a = build_model(config="A", **SMALL)
    d = build_model(config="D", **{**SMALL, "fc_width": 128})
    with pytest.raises(UserError, match="fc6 has shape"):
        init_from_net_a(d, a)
    with pytest.raises(UserError, match="needs a net A"):
        init_from_net_a(d, build_model(config="B", **SMALL))


def test_checkpoint_round_trip_carries_config(tmp_path):
    m = init_weights(build_model(config="C", **SMALL), "glorot", seed=3).eval()
    p = save_checkpoint(tmp_path / "c.pt", m, meta={"note": "x"})
    m2, ck = load_model(p)
    assert m2.cfg == m.cfg and ck["meta"]["note"] == "x"
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(m(x), m2(x))
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind
    with pytest.raises(UserError, match="expected 'D'"):
        load_model(p, expect={"config": "D"})


def test_checkpoint_loading_never_runs_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (exec, ("open('%s', 'w').write('pwned')" % (tmp_path / "pwned"),))

    p = tmp_path / "evil.pt"
    torch.save({"format": "vgg-pipeline/1", "model": {}, "x": Evil()}, p)
    with pytest.raises(UserError, match="not a loadable checkpoint"):
        load_model(p)
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(UserError, match="not found"):
        load_model(tmp_path / "missing.pt")


def test_dense_forms_centre_their_windows_on_sides_that_are_not_multiples_of_32():
    """A side of 32k + r pixels: the r rows / columns the poolings cannot tile are cut evenly from both
    sides (so a 37-pixel image is seen through its centre 32 pixels, not its top-left ones); multiples of 32
    are untouched (torchvision's outputs)."""
    from pipeline.models.vgg import centre_on_stride, stride_origin

    torch.manual_seed(2)
    m = init_weights(build_model(config="A", num_classes=10, width=0.125, fc_width=32, crop=32), "glorot",
                     seed=2).eval()
    x = torch.randn(2, 3, 37, 42)
    centre = x[..., 2:34, 5:37]  # 37 = 32 + 5: cut 2 above, 3 below; 42 = 32 + 10: 5 and 5
    assert stride_origin(37, 42) == (5, 2) and torch.equal(centre_on_stride(x), centre)
    with torch.no_grad():
        assert (m.forward_dense(x)[:, :, 0, 0] - m(centre)).abs().max() <= 1e-5
        assert (m.forward_features(x, dense=True)[:, :, 0, 0] - m.forward_features(centre)).abs().max() <= 1e-5
    same = torch.randn(1, 3, 64, 96)
    assert centre_on_stride(same) is same
