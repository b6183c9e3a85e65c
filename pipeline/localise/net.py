"""The localisation ConvNet (paper Appendix A.1): a classification :class:`~pipeline.models.VGG` whose last layer
predicts a box, 4 outputs (SCR) or 4 x C (PCR: outputs ``4c..4c+3`` are class c's), each ``(cx, cy, w, h)``
normalised by the crop-sized window it sees (densely: windows every 32 pixels of the rescaled image).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from pipeline.errors import UserError
from pipeline.localise.boxes import cxcywh_to_corners, scale_corners
from pipeline.localise.selection import class_order
from pipeline.models import VGG, build_model, load_model
from pipeline.models.vgg import STRIDE  # pixels between neighbouring dense locations

__all__ = ["Head", "STRIDE", "head_outputs", "localisation_net", "box_outputs", "LocaliserInfo",
           "load_localiser", "load_classifier", "box_map_to_corners"]

Head = Literal["scr", "pcr"]


def head_outputs(head: Head, num_classes: int) -> int:
    """Outputs of the box-regression layer: 4 (SCR) or 4 x classes (PCR)."""
    if head not in ("scr", "pcr"):
        raise UserError(f"unknown regression type {head!r} (scr, pcr)")
    return 4 if head == "scr" else 4 * num_classes


def localisation_net(classifier: VGG, head: Head = "pcr", init_std: float = 1e-2, seed: int | None = None,
                     dropout: float | None = None) -> VGG:
    """A new VGG whose layers but the last are copies of ``classifier``'s (any config, width, crop); the box
    layer's weights are drawn with std ``init_std`` from ``seed`` (biases 0); ``dropout`` after FC1 and FC2
    (default: the classification net's)."""
    classifier = getattr(classifier, "module", classifier)
    update: dict[str, Any] = {"num_classes": head_outputs(head, classifier.cfg.num_classes)}
    if dropout is not None:
        update["dropout"] = dropout
    cfg = classifier.cfg.model_copy(update=update)
    net = build_model(cfg)
    state = {k: v for k, v in classifier.state_dict().items() if not k.startswith("classifier.6.")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    if unexpected or set(missing) != {"classifier.6.weight", "classifier.6.bias"}:
        raise UserError(f"classification net does not fit its own config: missing {missing}, unexpected {unexpected}")
    last: nn.Linear = net.classifier[6]
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    with torch.no_grad():
        last.weight.copy_(torch.randn(last.weight.shape, generator=gen) * init_std)
        last.bias.zero_()
    return net


def box_outputs(out: torch.Tensor, head: Head, num_classes: int) -> torch.Tensor:
    """The net's outputs as boxes: N x K -> N x C' x 4, dense N x K x h x w -> N x h x w x C' x 4 (C' = K / 4)."""
    k = head_outputs(head, num_classes)
    if out.shape[1] != k:
        raise UserError(f"a {head.upper()} net for {num_classes} classes has {k} outputs, got {out.shape[1]}")
    if out.dim() == 2:
        return out.view(out.shape[0], k // 4, 4)
    if out.dim() == 4:
        n, _, h, w = out.shape
        return out.view(n, k // 4, 4, h, w).permute(0, 3, 4, 1, 2)
    raise ValueError(f"expected a 2-D or 4-D output, got shape {tuple(out.shape)}")


@dataclass
class LocaliserInfo:
    """What a localisation checkpoint's ``meta`` says: head, classes, fine-tuned layers, S."""

    head: Head
    classes: list[str]
    fine_tune: str
    train_scale: int | None
    meta: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.head.upper()}, {'all layers' if self.fine_tune == 'all' else '1st and 2nd FC'}"


def load_localiser(path: str | os.PathLike[str]) -> tuple[VGG, LocaliserInfo]:
    """Load a localisation checkpoint written by ``run_localise_train``."""
    model, ck = load_model(path)
    meta = ck.get("meta") or {}
    loc = meta.get("localise")
    if not isinstance(loc, dict) or loc.get("head") not in ("scr", "pcr"):
        raise UserError(f"{path}: not a localisation checkpoint (no meta.localise.head); "
                        "train one with `vgg localise train`")
    classes = list(meta.get("classes") or [])
    if not classes:
        raise UserError(f"{path}: localisation checkpoint records no classes")
    if model.cfg.num_classes != head_outputs(loc["head"], len(classes)):
        raise UserError(f"{path}: {loc['head'].upper()} head has {model.cfg.num_classes} outputs, "
                        f"expected {head_outputs(loc['head'], len(classes))} for {len(classes)} classes")
    s = (meta.get("train_scale") or {}).get("s_min")
    return model, LocaliserInfo(loc["head"], classes, str(loc.get("fine_tune", "all")), s, meta)


def load_classifier(path: str, classes: list[str],
                    names: list[str] | None = None) -> tuple[VGG, dict[str, Any], np.ndarray | None]:
    """A classification checkpoint: its net, the checkpoint and how its outputs map to the data's ``classes``
    (:func:`~pipeline.localise.selection.class_order`)."""
    model, ck = load_model(path)
    meta = ck.get("meta") or {}
    if meta.get("localise"):
        raise UserError(f"{path} is a localisation net, not a classification net")
    return model, ck, class_order(f"classifier {path}", meta.get("classes"), model.cfg.num_classes, classes, names)


def box_map_to_corners(box_map: np.ndarray, crop: int, scale: tuple[float, float], stride: int = STRIDE,
                       origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Dense [N x] h x w x C' x 4 boxes -> inclusive corners in the original image (not clipped); ``scale``: the
    rescaled / original size, ``origin``: where the first window starts (:func:`~pipeline.models.vgg.stride_origin`)."""
    h, w = box_map.shape[-4], box_map.shape[-3]
    corners = cxcywh_to_corners(box_map, crop, crop)
    ys, xs = np.meshgrid(np.arange(h) * stride, np.arange(w) * stride, indexing="ij")  # each window's top left
    off = np.stack([xs, ys], axis=-1).astype(np.float64)[:, :, None, :] + np.asarray(origin, dtype=np.float64)
    corners = corners + np.concatenate([off, off], axis=-1)
    return scale_corners(corners, 1.0 / scale[0], 1.0 / scale[1])
