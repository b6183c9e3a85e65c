"""Multi-label (VOC) sources: the N x C label matrix, and region descriptors of the boxes (Table 12)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import UserError
from pipeline.features import ExtractConfig, FeatureStore, image_descriptor, run_extract
from pipeline.features.store import l2_normalise
from pipeline.models import load_model
from pipeline.preprocess import Normalization
from pipeline.sources.voc import VOC_CLASSES
from tests.helpers.features import NORM, VOC_OBJECTS


def test_voc_labels_and_region_descriptors(tmp_path, ckpt, voc_tree):
    out = tmp_path / "voc.h5"
    scales = [32, 64]
    res = run_extract(ExtractConfig(checkpoints=[str(ckpt)], data=str(voc_tree), split="test", out=str(out),
                                    scales=scales, boxes=True, batch_size=2))
    assert res["status"] == "written" and res["images"] == 3
    cat, dog = VOC_CLASSES.index("cat"), VOC_CLASSES.index("dog")
    expect = -np.ones((3, 20), dtype=np.int8)
    expect[0, cat] = 1
    expect[1, dog] = 0  # only a difficult dog
    expect[2, [cat, dog]] = 1
    model, _ = load_model(ckpt)
    norm = Normalization(**NORM)
    jpegs = voc_tree / "VOCdevkit" / "VOC2007" / "JPEGImages"
    with FeatureStore(out) as st:
        assert st.label_kind == "multi" and st.labels.dtype == np.int8
        np.testing.assert_array_equal(st.labels, expect)
        assert st.classes == VOC_CLASSES and st.has_regions
        for row, (key, (_, _, objs)) in enumerate(VOC_OBJECTS.items()):
            img = Image.open(jpegs / f"{key}.jpg").convert("RGB")
            # region descriptor = mean over the image's boxes of the descriptor of each crop
            crops = [img.crop((int(b[0]), int(b[1]), int(b[2]), int(b[3]))) for _, b, _ in objs]
            ref = np.mean([image_descriptor(model, c, scales, norm) for c in crops], axis=0)
            whole = image_descriptor(model, img, scales, norm)
            for si, q in enumerate(scales):
                np.testing.assert_allclose(st.raw(0, q, regions=True)[row], ref[si], rtol=1e-4, atol=1e-6)
                np.testing.assert_allclose(st.raw(0, q)[row], whole[si], rtol=1e-4, atol=1e-6)
        # whole image and box stacked per net (VOC action setting), then L2-normalised
        f = st.features(regions=True)
        avg = lambda reg: np.mean([st.raw(0, q, regions=reg) for q in scales], axis=0)  # noqa: E731
        np.testing.assert_allclose(f, l2_normalise(np.hstack([avg(False), avg(True)])), rtol=1e-6)
        assert st.features(regions=True, aggregate="stack").shape == (3, 2 * 2 * 64)


def test_boxes_need_a_source_with_boxes(tmp_path, ckpt, fmnist):
    with pytest.raises(UserError, match="no boxes"):
        run_extract(ExtractConfig(checkpoints=[str(ckpt)], data=str(fmnist), split="val", out=str(tmp_path / "f.h5"),
                                  scales=[32], boxes=True))
