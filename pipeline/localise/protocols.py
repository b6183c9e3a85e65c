"""The two localisation testing protocols of paper Appendix A.1 on a batch of images: the central crop with the
ground-truth class (Table 8) and the dense application with greedy merging (Table 9); docs/formats.md 4.8.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pipeline.errors import UserError
from pipeline.evaluate.protocols import dense_evaluate
from pipeline.localise.augment import centre_crop
from pipeline.localise.boxes import (
    GroundTruth,
    clip_corners,
    cxcywh_to_corners,
    image_localisation_error,
    scale_corners,
)
from pipeline.localise.merge import MergeConfig, best_box
from pipeline.localise.net import LocaliserInfo, box_map_to_corners, box_outputs
from pipeline.models import VGG
from pipeline.models.vgg import stride_origin
from pipeline.preprocess import Normalization, isotropic_resize, normalize, pil_to_tensor
from pipeline.runtime import RuntimeConfig, autocast, resolve_bf16, resolve_device

__all__ = ["Runner", "LocNet", "crop_box_in_image", "centre_boxes", "crop_protocol_errors", "dense_boxes",
           "Rater", "DenseSettings", "class_maps", "DenseResult", "dense_localise"]


@dataclass
class Runner:
    """Where and how nets run: device, channels_last, bf16 autocast (CPU or CUDA)."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    channels_last: bool = False
    bf16: bool = False

    @classmethod
    def of(cls, rt: RuntimeConfig) -> Runner:
        """Where and how the nets run, from a stage's ``runtime`` section (which also sets torch's threads)."""
        if rt.threads is not None:
            torch.set_num_threads(rt.threads)
        device = resolve_device(rt.device)
        return cls(device, rt.channels_last, resolve_bf16(rt.bf16, device))

    def prepare(self, model: VGG) -> VGG:
        """Move a model to the device (and memory format), in eval mode."""
        model = model.to(self.device).eval()
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def input(self, x: torch.Tensor) -> torch.Tensor:
        """Move an input batch to the device (and memory format)."""
        x = x.to(self.device)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def autocast(self):
        return autocast(self.device, self.bf16)


@dataclass
class LocNet:
    """A loaded localisation net with what the protocols need to know about it."""

    model: VGG
    info: LocaliserInfo
    norm: Normalization
    scales: list[int]
    order: np.ndarray | None = None

    @property
    def crop(self) -> int:
        return self.model.cfg.crop

    def boxes(self, out: torch.Tensor) -> np.ndarray:
        """The net's outputs as boxes ``(cx, cy, w, h)`` (:func:`~pipeline.localise.net.box_outputs`), float64."""
        return box_outputs(out.float().cpu(), self.info.head, len(self.info.classes)).numpy().astype(np.float64)

    def slot(self, c: int) -> int:
        """Output slot of the data's class ``c``: its slot (PCR; ``order`` when the net lists classes in
        another order) or the shared 0 (SCR)."""
        if self.info.head == "scr":
            return 0
        return int(self.order[c]) if self.order is not None else c


def crop_box_in_image(pred: np.ndarray, crop: int, scale: tuple[float, float], offset: tuple[int, int],
                      size: tuple[int, int]) -> np.ndarray:
    """A box predicted in a central crop -> inclusive corners in the original image, clipped to it."""
    c = cxcywh_to_corners(pred, crop, crop) + np.array([offset[0], offset[1], offset[0], offset[1]], dtype=np.float64)
    return clip_corners(scale_corners(c, 1.0 / scale[0], 1.0 / scale[1]), size[0], size[1])


@torch.no_grad()
def centre_boxes(net: LocNet, batch: list[tuple[Any, GroundTruth]], runner: Runner,
                 classes: list[list[int]]) -> list[list[tuple[int, np.ndarray]]]:
    """Central-crop boxes of a batch (the first protocol): per image, (class, box in the image) for its ``classes``."""
    crops, geo = [], []
    for sample, _ in batch:
        bc, scale, off = centre_crop(sample.image, None, net.scales[0], net.crop)
        crops.append(bc.image)
        geo.append((scale, off, sample.image.size))
    with runner.autocast():
        preds = net.boxes(net.model(runner.input(normalize(torch.stack(crops), net.norm))))  # N x C' x 4, crop frame
    return [[(c, crop_box_in_image(pred[net.slot(c)], net.crop, scale, off, size)) for c in cs]
            for pred, (scale, off, size), cs in zip(preds, geo, classes, strict=False)]


def crop_protocol_errors(nets: list[LocNet], batch: list[tuple[Any, GroundTruth]], runner: Runner,
                         thr: float) -> tuple[list[list[float]], list[list[dict]]]:
    """Central-crop protocol on a batch: per net, per image error (GT classes) and the boxes guessed."""
    errors: list[list[float]] = []
    boxes_out: list[list[dict]] = []
    for net in nets:
        per_image = centre_boxes(net, batch, runner, [gt.classes for _, gt in batch])
        errors.append([image_localisation_error(g, gt, k=len(g), threshold=thr)
                       for g, (_, gt) in zip(per_image, batch, strict=False)])
        boxes_out.append([{str(c): [round(v, 2) for v in b.tolist()] for c, b in g} for g in per_image])
    return errors, boxes_out


def _rescale(imgs: Sequence[Image.Image], q: int, norm: Normalization, crop: int,
             what: str) -> tuple[torch.Tensor, tuple[float, float]]:
    """Same-size images rescaled to smallest side ``q`` (at least the ``what`` net's ``crop``), normalised and
    stacked; and the (sx, sy) factors."""
    if q < crop:
        raise UserError(f"test scale Q={q} is below the {what} net's crop size {crop}")
    rs = [isotropic_resize(img, q) for img in imgs]
    sizes = {r.size for r in rs}
    if len(sizes) != 1:
        raise ValueError(f"images of one batch must share their size, got {sorted(sizes)}")
    w, h = imgs[0].size
    return normalize(torch.stack([pil_to_tensor(r) for r in rs]), norm), (rs[0].size[0] / w, rs[0].size[1] / h)


@torch.no_grad()
def dense_boxes(net: LocNet, imgs: Sequence[Image.Image], q: int, runner: Runner) -> np.ndarray:
    """One net applied densely at scale ``q`` to same-size images: N x h x w x C' x 4 corner boxes in the original
    images' pixels, clipped to the image."""
    x, scale = _rescale(imgs, q, net.norm, net.crop, "localisation")
    with runner.autocast():
        bm = net.boxes(net.model.forward_dense(runner.input(x)))
    origin = stride_origin(x.shape[-2], x.shape[-1])  # the dense form centres its windows on the image
    corners = box_map_to_corners(bm, net.crop, scale, origin=origin)  # the leading N broadcasts
    return clip_corners(corners, imgs[0].size[0], imgs[0].size[1])


@dataclass
class Rater:
    """The classification net of the dense protocol: it rates each location's box and gives the top-k classes."""

    model: VGG
    norm: Normalization
    order: np.ndarray | None = None  #: ``order[c]``: its output of the data's class c (None: the same order)


@dataclass
class DenseSettings:
    """How the dense protocol runs."""

    merge: MergeConfig = field(default_factory=MergeConfig)
    k: int = 5  #: classes guessed per image (5 in ILSVRC)
    class_scales: Sequence[int] | None = None  #: scales of the classification protocol (default: the nets')
    flip: bool = True  #: the classification protocol also averages the flipped image's posteriors
    fusion: Sequence[int] | None = None  #: the nets whose boxes are also merged together (None: all, when several)


@torch.no_grad()
def class_maps(rater: Rater, imgs: Sequence[Image.Image], q: int, runner: Runner,
               flip: bool) -> tuple[np.ndarray, np.ndarray]:
    """The classification net at scale ``q`` on same-size images, in its own class order: (N x C posteriors of the
    dense classification protocol, N x C x h x w soft-max maps)."""
    classifier = rater.model
    x = runner.input(_rescale(imgs, q, rater.norm, classifier.cfg.crop, "classification")[0])
    with runner.autocast():
        score_map = classifier.forward_dense(x).float()
        # dense_evaluate(x, flip) = (soft-max of the spatially averaged map + the same of the flipped image) / 2;
        # the map of x is needed here anyway, so only the flipped image goes through dense_evaluate
        post = F.softmax(score_map.mean(dim=(2, 3)), dim=1)
        if flip:
            post = (post + dense_evaluate(classifier, x.flip(-1), flip=False).float()) / 2
    return post.cpu().numpy(), F.softmax(score_map, dim=1).cpu().numpy()


def _resize_map(m: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """N x C x h x w map -> N x C x H x W by nearest neighbour (a classifier with another crop than the loc net)."""
    if m.shape[2:] == tuple(hw):
        return m
    return F.interpolate(torch.from_numpy(m), size=hw, mode="nearest").numpy()


@dataclass
class DenseResult:
    """Dense protocol for one image: posteriors, top-k classes, and per ``net0``, ``net1``, ... and ``fusion`` (the
    union of the nets' boxes) a (class, corner box, accumulated score) per top-k class, and the boxes merged."""

    posteriors: np.ndarray
    top: list[int]
    guesses: dict[str, list[tuple[int, np.ndarray, float]]]
    n_boxes: dict[str, int]


def dense_localise(nets: Sequence[LocNet], rater: Rater, imgs: Sequence[Image.Image], runner: Runner,
                   how: DenseSettings | None = None, top: Sequence[Sequence[int]] | None = None) -> list[DenseResult]:
    """The fully-fledged protocol (Table 9) on same-size images (each image's result depends on it alone): every net
    at each of its test scales, boxes rated by ``rater``, merged per class of ``top`` (per image, from saved
    posteriors; None: the top-k of the rater's dense evaluation at ``how.class_scales``)."""
    how = how or DenseSettings()
    box_scales = sorted({q for n in nets for q in n.scales})
    cls_scales = sorted(set(how.class_scales or box_scales))
    rated = {q: class_maps(rater, imgs, q, runner, how.flip) for q in sorted(set(box_scales) | set(cls_scales))}
    if rater.order is not None:  # (posteriors, maps) in the data's class order
        rated = {q: (post[:, rater.order], cmap[:, rater.order]) for q, (post, cmap) in rated.items()}
    boxes_at = {(i, q): dense_boxes(net, imgs, q, runner) for i, net in enumerate(nets) for q in net.scales}
    groups = {f"net{i}": [i] for i in range(len(nets))}
    members = list(range(len(nets))) if how.fusion is None else list(how.fusion)
    if len(members) > 1:
        groups["fusion"] = members
    results = []
    for n in range(len(imgs)):
        p = np.mean([rated[q][0][n] for q in cls_scales], axis=0)
        classes = [int(c) for c in (top[n] if top is not None else np.argsort(-p, kind="stable"))][:how.k]
        # every net's boxes at every location and scale, with the classifier's soft-max there
        located = {(i, q): (b[n], _resize_map(rated[q][1][n:n + 1], b.shape[1:3])[0]) for (i, q), b in boxes_at.items()}
        guesses: dict[str, list[tuple[int, np.ndarray, float]]] = {}
        n_boxes: dict[str, int] = {}
        for name, members in groups.items():
            guesses[name], n_boxes[name] = [], 0
            for c in classes:
                parts = [(located[i, q], nets[i].slot(c)) for i in members for q in nets[i].scales]
                boxes = np.concatenate([corners[:, :, slot, :].reshape(-1, 4) for (corners, _), slot in parts])
                scores = np.concatenate([cmap[c].reshape(-1) for (_, cmap), _ in parts])
                box, score = best_box(boxes, scores, how.merge, imgs[0].size)
                guesses[name].append((c, box, score))
                n_boxes[name] += len(boxes)
        results.append(DenseResult(p, classes, guesses, n_boxes))
    return results
