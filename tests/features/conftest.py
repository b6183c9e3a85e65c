"""Fixtures for the extract stage: small nets as checkpoints and real images laid out as users have them."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.helpers.features import VOC_OBJECTS, make_checkpoint


@pytest.fixture(scope="session", autouse=True)
def _one_thread_when_busy():
    """On a machine busier than its cores, small convolutions with two threads wait on each other
    (tens of times slower); these tests then use one thread. Results do not depend on it."""
    threads = torch.get_num_threads()
    if os.getloadavg()[0] > (os.cpu_count() or 1):
        torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "a.pt", seed=0)


@pytest.fixture(scope="session")
def ckpt2(tmp_path_factory) -> Path:
    """A second, different net (config B, FC 48) for late fusion."""
    return make_checkpoint(tmp_path_factory.mktemp("ckpt2") / "b.pt", seed=1, config="B", fc_width=48)


@pytest.fixture(scope="session")
def fmnist(tmp_path_factory) -> Path:
    """Fashion-MNIST as an ImageFolder tree (train/ and val/, 28x28 PNGs): 3 val images per class."""
    from pipeline.shipped.fashion_mnist import prepare_fashion_mnist

    return prepare_fashion_mnist(tmp_path_factory.mktemp("fm") / "fashion", train_per_class=1, val_per_class=3)


@pytest.fixture(scope="session")
def photos_tree(tmp_path_factory, photos) -> Path:
    """scikit-learn's two photos as JPEGs (427x640) in class folders, plus a truncated JPEG and a text file."""
    root = tmp_path_factory.mktemp("photos") / "photos"
    for name, arr in zip(("china", "flower"), photos, strict=False):
        (root / name).mkdir(parents=True)
        Image.fromarray(arr).save(root / name / f"{name}.jpg", quality=92)
        # a portrait crop, so images of different aspect ratios share a batch
        Image.fromarray(arr[:, 100:400]).save(root / name / f"{name}_portrait.jpg", quality=92)
    buf = io.BytesIO()
    Image.fromarray(photos[0]).save(buf, format="JPEG")
    (root / "flower" / "broken.jpg").write_bytes(buf.getvalue()[:300])
    (root / "china" / "notes.jpg").write_text("not an image")
    return root


@pytest.fixture(scope="session")
def voc_tree(tmp_path_factory, photos) -> Path:
    """A PASCAL VOC 2007 tree (JPEGImages, Annotations XML, ImageSets/Main/test.txt) of photo crops."""
    root = tmp_path_factory.mktemp("voc") / "voc"
    d = root / "VOCdevkit" / "VOC2007"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (d / sub).mkdir(parents=True)
    for key, (pi, (x0, y0, x1, y1), objs) in VOC_OBJECTS.items():
        img = Image.fromarray(photos[pi][y0:y1, x0:x1])
        img.save(d / "JPEGImages" / f"{key}.jpg", quality=92)
        xml = [f"<annotation><filename>{key}.jpg</filename><size><width>{img.width}</width>"
               f"<height>{img.height}</height><depth>3</depth></size>"]
        for name, (bx0, by0, bx1, by1), diff in objs:
            xml.append(f"<object><name>{name}</name><difficult>{int(diff)}</difficult><bndbox><xmin>{bx0}</xmin>"
                       f"<ymin>{by0}</ymin><xmax>{bx1}</xmax><ymax>{by1}</ymax></bndbox></object>")
        (d / "Annotations" / f"{key}.xml").write_text("".join(xml) + "</annotation>")
    (d / "ImageSets" / "Main" / "test.txt").write_text("".join(f"{k}\n" for k in VOC_OBJECTS))
    return root
