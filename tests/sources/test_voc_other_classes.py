"""A VOC-format tree of other objects (the shipped mosaics) is read with its own class list."""

from pipeline.data import open_data
from pipeline.shipped.fashion_mnist import CLASSES
from pipeline.shipped.voc_mosaics import prepare_voc_mosaics
from pipeline.sources.voc import VOC_CLASSES


def test_voc_reader_takes_classes_from_the_imagesets(tmp_path):
    root = prepare_voc_mosaics(tmp_path / "m", images=24)
    view = open_data(root, "trainval")
    assert view.classes == sorted(CLASSES) and view.classes != VOC_CLASSES
    n_pos = 0
    for s in view:
        for c, lab in zip(view.classes, s.labels, strict=False):
            objs = [b for b in s.boxes if b["name"] == c]
            expect = 1 if any(not b["difficult"] for b in objs) else (0 if objs else -1)
            assert lab == expect, (s.key, c)
            n_pos += lab == 1
    assert n_pos > 0
