"""The paper's test protocols (Section 3.2; experiments in 4.1-4.4): dense and multi-crop evaluation, multi-scale
averaging (4.2), their combination (4.3, Table 5) and the fusion of nets (4.4, Table 6); docs/evaluation.md.

The tensor functions take a batch of images of one rescaled size; every image's result depends on it alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pipeline.errors import UserError
from pipeline.models.vgg import VGG
from pipeline.preprocess import Normalization, isotropic_resize, normalize, pil_to_tensor

__all__ = [
    "Method", "METHODS", "METHOD_NAMES", "methods_of", "crop_grid", "rescale_batch", "dense_evaluate", "multi_crop",
    "multi_scale", "combine_methods", "fuse", "classify",
]

Method = Literal["dense", "multicrop"]
METHODS: tuple[str, ...] = ("dense", "multicrop")
#: how the paper's tables name each evaluation (Table 5)
METHOD_NAMES = {"dense": "dense", "multicrop": "multi-crop", "both": "multi-crop & dense"}


def methods_of(method: str) -> list[str]:
    """The methods an evaluation runs: ``both`` is dense and multi-crop (and their combination)."""
    return list(METHODS) if method == "both" else [method]


def crop_grid(height: int, width: int, crop: int, grid: int = 5) -> list[tuple[int, int]]:
    """(top, left) of a ``grid`` x ``grid`` regular grid of ``crop`` x ``crop`` crops, evenly spaced (rounded) from
    border to border: the corner crops are included and the grid is mirror-symmetric."""
    if height < crop or width < crop:
        raise UserError(f"image {width}x{height} is smaller than the crop size {crop}")
    if grid < 1:
        raise UserError(f"the crop grid needs at least 1 position per side, got {grid}")

    def positions(size: int) -> list[int]:
        span = size - crop
        return [span // 2] if grid == 1 else [int(np.floor(i * span / (grid - 1) + 0.5)) for i in range(grid)]

    return [(t, l) for t in positions(height) for l in positions(width)]


def rescale_batch(images: Sequence[Image.Image], q: int, norm: Normalization) -> torch.Tensor:
    """Rescale each RGB image to smallest side ``q`` and stack them normalised (N x 3 x H x W); all must reach the
    same size at ``q`` (same aspect ratio): that is how batches are formed."""
    tensors = [pil_to_tensor(isotropic_resize(img, q)) for img in images]
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) != 1:
        raise UserError(f"images of different sizes at Q={q} cannot share a batch: {sorted(shapes)}")
    return normalize(torch.stack(tensors), norm)


@torch.no_grad()
def dense_evaluate(model: VGG, x: torch.Tensor, *, flip: bool = True) -> torch.Tensor:
    """Dense evaluation (paper 3.2) of normalised same-size images N x 3 x H x W (sides at least the crop): the FC
    layers as convolutions (``forward_dense``), the score map averaged, soft-maxed, and with ``flip`` averaged with
    the flipped images'; class posteriors N x classes (float32)."""
    def once(inp: torch.Tensor) -> torch.Tensor:
        score_map = model.forward_dense(inp)  # N x C x h x w
        return F.softmax(score_map.float().mean(dim=(2, 3)), dim=1)  # spatial average, then soft-max

    p = once(x)
    if flip:
        p = (p + once(x.flip(-1))) / 2
    return p


@torch.no_grad()
def multi_crop(model: VGG, x: torch.Tensor, *, grid: int = 5, flip: bool = True,
               crop_batch: int = 256) -> torch.Tensor:
    """Multi-crop evaluation (paper 3.2, 4.3) of normalised same-size images N x 3 x H x W: the average soft-max
    posteriors (N x classes) of a ``grid`` x ``grid`` grid of crops of the net's crop size, each also flipped with
    ``flip`` (the paper: 5 x 5 x 2 = 50 crops per scale); ``crop_batch`` crops per forward pass (memory only)."""
    n, _, h, w = x.shape
    c = model.cfg.crop
    views = [(t, l, f) for (t, l) in crop_grid(h, w, c, grid) for f in ((False, True) if flip else (False,))]
    per_chunk = max(1, crop_batch // max(1, n))
    total = torch.zeros(n, model.cfg.num_classes, dtype=torch.float32, device=x.device)
    for start in range(0, len(views), per_chunk):
        chunk = views[start:start + per_chunk]
        batch = torch.cat([x[:, :, t:t + c, l:l + c].flip(-1) if f else x[:, :, t:t + c, l:l + c] for t, l, f in chunk])
        # (len(chunk) * N) x C, view-major
        total += F.softmax(model(batch).float(), dim=1).view(len(chunk), n, -1).sum(dim=0)
    return total / len(views)


def multi_scale(per_scale: Sequence[np.ndarray | torch.Tensor]) -> np.ndarray:
    """Multi-scale evaluation (paper 4.2): the average of the posteriors over test scales Q."""
    if not per_scale:
        raise UserError("multi-scale evaluation needs at least one scale")
    return np.mean([np.asarray(p, dtype=np.float64) for p in per_scale], axis=0)


def combine_methods(dense: np.ndarray, multicrop: np.ndarray) -> np.ndarray:
    """Multi-crop & dense (paper 4.3, Table 5): the average of the two methods' posteriors."""
    return (np.asarray(dense, dtype=np.float64) + np.asarray(multicrop, dtype=np.float64)) / 2


def fuse(nets: Sequence[np.ndarray]) -> np.ndarray:
    """ConvNet fusion (paper 4.4, Table 6): the average of several nets' soft-max posteriors."""
    if not nets:
        raise UserError("fusion needs at least one net")
    shapes = {np.shape(p) for p in nets}
    if len(shapes) != 1:
        raise UserError(f"cannot fuse posteriors of different shapes: {sorted(shapes)}")
    return np.mean([np.asarray(p, dtype=np.float64) for p in nets], axis=0)


def classify(model: VGG, image: Image.Image, scales: Sequence[int], norm: Normalization,
             method: Literal["dense", "multicrop", "both"] = "dense", *, flip: bool = True,
             grid: int = 5) -> np.ndarray:
    """Posteriors (classes,), float64, of one RGB image under one protocol over several scales (a one-image API)."""
    per_method: dict[str, list[np.ndarray]] = {m: [] for m in methods_of(method)}
    for q in scales:
        if q < model.cfg.crop:
            raise UserError(f"test scale Q={q} is below the crop size {model.cfg.crop}")
        x = rescale_batch([image], q, norm)
        for m, ps in per_method.items():
            ps.append((dense_evaluate(model, x, flip=flip) if m == "dense"
                       else multi_crop(model, x, grid=grid, flip=flip))[0].numpy())
    results = [multi_scale(ps) for ps in per_method.values()]
    return results[0] if len(results) == 1 else combine_methods(*results)
