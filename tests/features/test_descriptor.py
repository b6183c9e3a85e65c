"""The Appendix B descriptor against a direct numpy computation on real images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from pipeline.errors import UserError
from pipeline.features import (
    ExtractConfig,
    FeatureStore,
    Net,
    box_crops,
    describe,
    descriptor_scales,
    prepare_images,
    run_extract,
)
from pipeline.models import load_model
from pipeline.preprocess import Normalization
from tests.helpers.features import NORM, SCALES


def reference_descriptor(model, path: Path, q: int, flip: bool = True) -> np.ndarray:
    """numpy: rescale (smallest side q), keep the centre multiple-of-32 region, conv layers, then FC6/FC7
    applied at every position of the pool5 map by explicit matrix products (the fully-convolutional net of
    paper 3.2), ReLU, mean over positions, averaged with the mirrored image."""
    img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    w, h = img.size
    size = (q, int(round(h * q / w))) if w <= h else (int(round(w * q / h)), q)
    arr = np.asarray(img.resize(size, Image.BILINEAR), dtype=np.float64)
    mean, std = np.asarray(NORM["mean"]), np.asarray(NORM["std"])
    fc6, fc7 = model.classifier[0], model.classifier[3]
    w6, b6 = fc6.weight.detach().double().numpy(), fc6.bias.detach().double().numpy()
    w7, b7 = fc7.weight.detach().double().numpy(), fc7.bias.detach().double().numpy()
    k = model.cfg.crop // 32

    def one(a: np.ndarray) -> np.ndarray:
        hh, ww = a.shape[:2]  # the dense form uses the centre 32k x 32l pixels (side mod 32 cut evenly)
        oy, ox = (hh % 32) // 2, (ww % 32) // 2
        a = a[oy:oy + hh - hh % 32, ox:ox + ww - ww % 32]
        x = torch.from_numpy(((a - mean) / std).transpose(2, 0, 1).astype(np.float32).copy())[None]
        with torch.no_grad():
            p5 = model.features(x)[0].double().numpy()
        vals = []
        for i in range(p5.shape[1] - k + 1):
            for j in range(p5.shape[2] - k + 1):
                f6 = np.maximum(w6 @ p5[:, i:i + k, j:j + k].reshape(-1) + b6, 0)
                vals.append(np.maximum(w7 @ f6 + b7, 0))
        return np.mean(vals, axis=0)

    d = one(arr)
    return (d + one(arr[:, ::-1])) / 2 if flip else d


def _image_paths(root: Path, split: str | None = None) -> dict[str, Path]:
    base = root / split if split else root
    return {"__".join(p.relative_to(base).with_suffix("").parts).replace(".", "_"): p
            for p in base.rglob("*") if p.is_file()}


def test_store_matches_numpy_reference(tmp_path, ckpt, fmnist, photos_tree):
    """Photos (427x640 and portrait crops) and Fashion-MNIST images: every stored per-scale
    descriptor equals the direct computation."""
    model, _ = load_model(ckpt)
    for data, split, scales in ((photos_tree, None, [32, 80]), (fmnist, "val", SCALES)):
        out = tmp_path / f"{data.name}.h5"
        run_extract(ExtractConfig(checkpoints=[str(ckpt)], data=str(data), split=split, out=str(out),
                                  scales=scales, batch_size=4))
        paths = _image_paths(data, split)
        with FeatureStore(out) as st:
            ids = list(st.ids)
            check = ids if len(ids) <= 4 else ids[::11]
            for q in scales:
                raw = st.raw(0, q)
                for key in check:
                    ref = reference_descriptor(model, paths[key], q)
                    got = raw[ids.index(key)]
                    assert np.abs(ref).max() > 0
                    np.testing.assert_allclose(
                        got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max(), err_msg=f"{key} Q={q}"
                    )


def test_batching_and_grouping_do_not_change_descriptors(ckpt, photos):
    """A batch mixing sizes (landscape, portrait, square) gives each image its own descriptor."""
    model, _ = load_model(ckpt)
    net = Net(model, Normalization(**NORM))
    imgs = [Image.fromarray(photos[0]), Image.fromarray(photos[1][:, 100:400]), Image.fromarray(photos[1][:200, :200]),
            Image.fromarray(photos[1])]
    together = describe(net, prepare_images(imgs, SCALES), len(imgs))
    tight = describe(net, prepare_images(imgs, SCALES, max_pixels=1), len(imgs))  # one image per forward pass
    for i, im in enumerate(imgs):
        alone = describe(net, prepare_images([im], SCALES), 1)[0]
        np.testing.assert_allclose(together[i], alone, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(tight[i], alone, rtol=1e-5, atol=1e-6)


def test_flip_average_and_no_flip(ckpt, photos):
    model, _ = load_model(ckpt)
    net = Net(model, Normalization(**NORM))
    img = Image.fromarray(photos[0])
    mirrored = ImageOps.mirror(img)
    plain = describe(net, prepare_images([img, mirrored], [48], flip=False), 2, flip=False)
    both = describe(net, prepare_images([img], [48]), 1)
    np.testing.assert_allclose(both[0], (plain[0] + plain[1]) / 2, rtol=1e-5, atol=1e-6)
    assert not np.allclose(plain[0], plain[1])  # the net is not mirror-symmetric: flipping matters


def test_bf16_channels_last_close_to_fp32(ckpt, photos):
    model, _ = load_model(ckpt)
    imgs = [Image.fromarray(p) for p in photos]
    ref = describe(Net(model, Normalization(**NORM)), prepare_images(imgs, SCALES), 2)
    fast_model, _ = load_model(ckpt)
    fast = Net(fast_model, Normalization(**NORM)).to(torch.device("cpu"), channels_last=True)
    got = describe(fast, prepare_images(imgs, SCALES), 2, bf16=True, channels_last=True)
    cos = (got * ref).sum(-1) / np.linalg.norm(got, axis=-1) / np.linalg.norm(ref, axis=-1)
    assert cos.min() > 0.99
    np.testing.assert_allclose(got, ref, rtol=0.1, atol=0.05 * np.abs(ref).max())


def test_scales_presets_relative_and_below_crop():
    assert descriptor_scales("paper", 224) == [256, 384, 512]
    assert descriptor_scales("voc", 224) == [256, 384, 512, 640, 768]
    assert descriptor_scales("paper", 32, relative=True) == [32, 48, 64]
    assert descriptor_scales([32, 48, 64], 32) == [32, 48, 64]
    with pytest.raises(UserError, match="below the crop size 64"):
        descriptor_scales([48, 64], 64)
    with pytest.raises(UserError, match="unknown scale preset"):
        descriptor_scales("huge", 224)


def test_scale_below_crop_is_a_clear_error(tmp_path, ckpt, fmnist):
    with pytest.raises(UserError, match=r"test scale\(s\) \[16\] below the crop size 32"):
        run_extract(ExtractConfig(checkpoints=[str(ckpt)], data=str(fmnist), split="val",
                                  out=str(tmp_path / "f.h5"), scales=[16, 32]))
    assert not (tmp_path / "f.h5").exists()


def test_box_crops_are_clamped():
    img = Image.new("RGB", (100, 60))
    crops = box_crops(
        img,
        [
            {"xmin": 10.4, "ymin": 5, "xmax": 50.2, "ymax": 30},
            {"xmin": -5, "ymin": 50, "xmax": 500, "ymax": 50},
            {"xmin": 99, "ymin": 59, "xmax": 99, "ymax": 59},
        ],
    )
    assert [c.size for c in crops] == [(41, 25), (100, 1), (1, 1)]


def test_not_a_checkpoint_is_a_clear_error(tmp_path, fmnist):
    bad = tmp_path / "weights.pt"
    bad.write_text("not a checkpoint")
    with pytest.raises(UserError, match="not a loadable checkpoint"):
        run_extract(ExtractConfig(checkpoints=[str(bad)], data=str(fmnist), split="val", out=str(tmp_path / "f.h5")))
    with pytest.raises(UserError, match="checkpoint not found"):
        run_extract(ExtractConfig(checkpoints=[str(tmp_path / "missing.pt")], data=str(fmnist), split="val",
                                  out=str(tmp_path / "f.h5")))
