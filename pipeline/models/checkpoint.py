"""Checkpoints that carry their model config (plain dicts read with ``weights_only=True``, their tensors'
sha256 checked on load), and torchvision's VGG weights. docs/models.md gives the file's layout.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from pipeline.config import config_from
from pipeline.errors import UserError
from pipeline.io import atomic_path
from pipeline.models.vgg import NETS, VGG, ModelConfig, build_model

__all__ = ["FORMAT", "save_checkpoint", "load_checkpoint", "load_model", "import_torchvision_weights",
           "infer_torchvision_config", "tensors_sha256", "read_checkpoint_file"]

FORMAT = "vgg-pipeline/1"
HASH_KEY = "tensors_sha256"


def _tensors(obj: Any, path: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """(path, tensor) of every tensor in nested dicts / lists, in a fixed order."""
    if isinstance(obj, torch.Tensor):
        yield path, obj
    elif isinstance(obj, dict):
        for k in sorted(obj, key=lambda k: (type(k).__name__, str(k))):
            if not (path == "" and k == HASH_KEY):
                yield from _tensors(obj[k], f"{path}/{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{path}/{i}")


def tensors_sha256(obj: Any) -> str:
    """sha256 over every tensor of a checkpoint dict: path, dtype, shape and raw bytes (the hash key itself skipped)."""
    h = hashlib.sha256()
    for name, t in _tensors(obj):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        if t.numel():
            h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


def save_checkpoint(path: str | os.PathLike[str], model: VGG, meta: dict[str, Any] | None = None, **extra: Any) -> Path:
    """Atomically save ``model`` with its config, ``meta`` and any extra state (optimizer, ...)."""
    model = getattr(model, "module", model)  # unwrap DDP
    model = getattr(model, "_orig_mod", model)  # unwrap torch.compile
    obj = {"format": FORMAT, "model": model.cfg.model_dump(mode="json"),
           "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "meta": meta or {}, **extra}
    obj[HASH_KEY] = tensors_sha256(obj)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def _load_error(p: Path, e: Exception) -> UserError:
    """What is wrong with a file ``torch.load(weights_only=True)`` refused, in one line."""
    text = str(e)
    if isinstance(e, pickle.UnpicklingError):
        m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        what = f" (e.g. {m.group(1)})" if m else ""
        return UserError(f"{p}: not a loadable checkpoint: it holds pickled Python objects{what}, and loading those "
                         "could run code from the file, so it is not read; checkpoints hold only tensors and plain "
                         "values (as `vgg train` writes them)")
    with open(p, "rb") as fh:
        zipped = fh.read(4) == b"PK\x03\x04"  # torch.save's archive: then it is damaged, not foreign
    if zipped or "zip archive" in text or isinstance(e, EOFError):
        return UserError(f"{p}: not a loadable checkpoint: damaged or truncated (its archive cannot be read); "
                         "use an intact copy")
    first = text.strip().splitlines()[0][:160] if text.strip() else ""
    detail = f": {first}" if len(first) > 8 and "weights_only" not in first else ""
    return UserError(f"{p}: not a loadable checkpoint (not a PyTorch file; {type(e).__name__}{detail})")


def read_checkpoint_file(path: str | os.PathLike[str]) -> Any:
    """``torch.load(weights_only=True)`` of any torch file, with one-line errors (UserError: missing, unreadable,
    holding pickled objects) and the tensors checked against their recorded sha256."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"checkpoint not found: {p}")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a user-facing "bad file"
        raise _load_error(p, e) from None
    if isinstance(obj, dict) and HASH_KEY in obj and tensors_sha256(obj) != obj[HASH_KEY]:
        raise UserError(f"{p}: damaged checkpoint: its tensors do not match their recorded sha256 "
                        f"({str(obj[HASH_KEY])[:12]}...), so the file changed after it was written; use an intact copy")
    return obj


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint dict safely (``weights_only=True``, tensor sha256 verified); clear errors for wrong files."""
    p = Path(path)
    obj = read_checkpoint_file(p)
    if not isinstance(obj, dict) or obj.get("format") != FORMAT or "model" not in obj:
        raise UserError(f"{p}: not a vgg-pipeline checkpoint (no recorded model config); "
                        "for torchvision weights use `vgg import-weights`")
    return obj


def load_model(path: str | os.PathLike[str], expect: dict[str, Any] | None = None) -> tuple[VGG, dict[str, Any]]:
    """(the model a checkpoint records, with its weights, in eval mode; the checkpoint dict); ``expect``: ModelConfig
    fields that must match (e.g. ``{"config": "D"}``)."""
    ck = load_checkpoint(path)
    cfg = config_from(ModelConfig, ck["model"], source=f"{path} model config")
    for k, v in (expect or {}).items():
        if getattr(cfg, k) != v:
            raise UserError(f"{path}: checkpoint has {k}={getattr(cfg, k)!r}, expected {v!r}")
    model = build_model(cfg)
    model.load_state_dict(ck["state_dict"])
    return model.eval(), ck


def infer_torchvision_config(state_dict: dict[str, torch.Tensor]) -> tuple[str, bool]:
    """(config name, batch_norm) of a torchvision VGG state dict, from its conv count and keys."""
    conv_keys = [k for k, v in state_dict.items()
                 if k.startswith("features.") and k.endswith(".weight") and v.dim() == 4]
    bn = any(k.endswith("running_mean") for k in state_dict)
    by_count = {len(spec.conv_names): n for n, spec in NETS.items() if spec.torchvision}
    if len(conv_keys) not in by_count:
        raise UserError(f"not a torchvision VGG state dict ({len(conv_keys)} conv layers)")
    return by_count[len(conv_keys)], bn


def import_torchvision_weights(src: str | os.PathLike[str], config: str | None = None, **model_kwargs: Any) -> VGG:
    """Load a torchvision VGG ``.pth`` state dict into our model (the nets with a :attr:`NetSpec.torchvision`).

    The class count, FC width and crop size are read off the weights' shapes; ``config`` (if given)
    must agree with the layer count.
    """
    p = Path(src)
    sd = read_checkpoint_file(p)
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    name, bn = infer_torchvision_config(sd)
    if config is not None and config != name:
        raise UserError(f"{p}: weights are config {name} ({len(sd)} tensors), not {config}")
    fc6, width = sd["classifier.0.weight"], sd["features.0.weight"].shape[0] / 64
    k = int(round((fc6.shape[1] / round(512 * width)) ** 0.5))
    cfg = ModelConfig(config=name, batch_norm=bn, width=width, fc_width=fc6.shape[0],
                      num_classes=sd["classifier.6.weight"].shape[0], crop=32 * k, **model_kwargs)
    model = build_model(cfg)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise UserError(f"{p}: weights do not fit config {name}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model.eval()
