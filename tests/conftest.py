"""Shared fixtures: real images (scikit-learn's sample photos, Fashion-MNIST) and small nets."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

# One thread per process: tests start several processes (gloo ranks, servers) on two cores, and
# oversubscribed small convolutions run many times slower than single-threaded ones.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def photos() -> list[np.ndarray]:
    """scikit-learn's two sample photos (china.jpg, flower.jpg), 427x640 RGB uint8: real images, offline."""
    from sklearn.datasets import load_sample_images

    return list(load_sample_images().images)


@pytest.fixture(scope="session")
def photo_batch(photos) -> torch.Tensor:
    """The sample photos resized to 224x224, mean-subtracted, as a float batch (2 x 3 x 224 x 224)."""
    from PIL import Image

    arrs = [np.asarray(Image.fromarray(p).resize((224, 224), Image.BILINEAR), dtype=np.float32) for p in photos]
    x = torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2)
    return (x - torch.tensor([123.68, 116.779, 103.939]).view(1, 3, 1, 1)) / 58.0
