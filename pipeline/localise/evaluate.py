"""The localisation evaluation stage (paper Appendix A.2, Tables 8 and 9).

``run_localise_evaluate(cfg)`` runs one of the two testing protocols of
:mod:`pipeline.localise.protocols` over a split with box annotations and reports the ILSVRC
localisation error (:mod:`pipeline.localise.metric`):

- ``crop``: one row per localisation net (fine-tuned layers, regression type, GT-class error), the
  layout of Table 8;
- ``dense``: one row per net (train S, test Q, top-5 error) and, with several nets, the fusion of
  their boxes (union before merging), the layout of Table 9.

Both also rate two boxes that need no net, with the same classes: the whole image and its centre
quarter (half the width and height), so a result can be read against them. Images that cannot be
decoded or have no usable box are skipped with their reason and left out of the denominator (as
the devkit's blacklist); data without any box annotation is an error.

Outputs under ``out``: ``loc_table.md`` (the table), ``predictions.jsonl`` (per image: guesses and
errors), ``config.yaml`` and ``loc_eval.json`` (the summary, written last).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from pipeline.config import StageConfig, save_config
from pipeline.errors import UserError
from pipeline.io import atomic_write_json, atomic_write_text, sha256_file
from pipeline.localise.augment import centre_crop
from pipeline.localise.boxes import GroundTruth, centre_quarter_box, ground_truth, whole_image_box
from pipeline.localise.merge import MergeConfig
from pipeline.localise.metric import image_classification_error, image_localisation_error
from pipeline.localise.net import load_localiser
from pipeline.localise.protocols import LocNet, Runner, crop_box_in_image, crop_predictions, dense_localise
from pipeline.models import load_model
from pipeline.preprocess import normalization_of, normalize

__all__ = ["LocaliseEvalConfig", "run_localise_evaluate", "BASELINES", "resolve_device", "class_order",
           "iter_ground_truth", "crop_protocol_errors", "skip_category", "baseline_errors"]

BASELINES = ("whole image", "centre quarter")
MAX_SKIPS_LISTED = 1000


class LocaliseEvalConfig(StageConfig):
    """Configuration of ``run_localise_evaluate`` (paper A.1 testing protocols, A.2 Tables 8-9)."""

    checkpoints: list[str] = Field(..., min_length=1, description="localisation checkpoints (several: their boxes "
                                                                  "are united before merging, dense protocol)")
    classifier: str | None = Field(None, description="classification checkpoint rating the boxes and giving the "
                                                     "top-5 classes (required by the dense protocol)")
    data: str = Field(..., description="data with boxes: a shard folder or a source dataset (VOC/ILSVRC XML)")
    split: str | None = Field("val", description="split to evaluate (None: the only / val / test split)")
    format: str = Field("auto", description="source layout when data is not a shard folder (auto detects)")
    protocol: Literal["crop", "dense"] = Field("dense", description="crop: central crop with the ground-truth class "
                                                                    "(Table 8); dense: whole image, merged boxes, "
                                                                    "top-5 classes (Table 9)")
    scales: list[int] | None = Field(None, description="test scales Q of every localisation net (default: each "
                                                       "net's training scale S, as Table 9's S/Q rows); the crop "
                                                       "protocol uses the first")
    net_scales: list[list[int]] | None = Field(None, description="test scales of each net, in checkpoint order "
                                                                "(overrides scales; Table 9's fusion row: 256/256 "
                                                                "and 384/352,384)")
    class_scales: list[int] | None = Field(None, description="scales of the classification protocol giving the "
                                                             "top-5 classes (default: the localisation scales)")
    flip: bool = Field(True, description="the classification protocol averages in the flipped image (paper: on)")
    top_k: int = Field(5, ge=1, description="(label, box) guesses per image (ILSVRC: 5); the error at 1 is "
                                            "reported too")
    iou_threshold: float = Field(0.5, gt=0, le=1, description="a box is correct at IoU >= this (ILSVRC: 0.5)")
    merge: MergeConfig = Field(default_factory=MergeConfig, description="OverFeat greedy merging (dense protocol)")
    batch_size: int = Field(32, ge=1, description="images per forward pass (central crops; dense: images of one size)")
    max_buffered: int = Field(256, ge=1, description="dense protocol: most images held while same-size batches fill")
    limit: int | None = Field(None, ge=1, description="evaluate only the first N images of the split")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="where to run (auto: cuda if available)")
    channels_last: bool = Field(False, description="channels-last memory format (faster on AVX-512/AMX CPUs, GPUs)")
    bf16: bool = Field(False, description="bfloat16 autocast (faster; boxes differ slightly from float32)")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: as set by the environment; 1 is "
                                                        "fastest for small nets on a busy machine)")
    out: str | None = Field(None, description="output folder (None: return the summary without writing files)")
    progress: bool = Field(True, description="show progress on a terminal")

    @model_validator(mode="before")
    @classmethod
    def _per_net_scales(cls, data: Any) -> Any:
        """``scales: "256;352,384"`` (text with ';') gives each net its scales (``net_scales``)."""
        if isinstance(data, dict) and isinstance(data.get("scales"), str) and ";" in data["scales"]:
            data = {**data, "net_scales": data["scales"]}
            del data["scales"]
        return data


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if available, else cpu; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device cuda requested but no CUDA device is available")
    return torch.device(name)


def class_order(what: str, theirs: list[str] | None, count: int, classes: list[str]) -> np.ndarray | None:
    """How a net's outputs map to the data's classes: None (same order) or ``order[c]`` = the net's index of class c.

    Raises:
        UserError: another class count, or (when the net records names) other class names.
    """
    if count != len(classes):
        raise UserError(f"{what} has {count} classes but the data has {len(classes)}; "
                        "use a net trained on the same classes")
    if not theirs or list(theirs) == list(classes):
        return None
    if sorted(theirs) != sorted(classes):
        extra = sorted(set(theirs) - set(classes))[:3]
        raise UserError(f"{what} classes differ from the data's (e.g. {extra} not in the data)")
    return np.array([list(theirs).index(c) for c in classes], dtype=np.int64)


def iter_ground_truth(view: Any, limit: int | None, skips: list[dict[str, str]], counts: dict[str, int]):
    """Yield (sample, GroundTruth) for usable images; record the others in ``skips``.

    Raises:
        UserError: when the data carries no box annotations at all.
    """
    seen = with_boxes = 0
    for sample in view:
        if limit is not None and seen >= limit:
            break
        seen += 1
        counts["images"] = seen
        if sample.boxes is not None:
            with_boxes += 1
        if sample.image is None:
            skips.append({"key": sample.key, "reason": f"not decodable: {sample.error}"})
            continue
        if sample.boxes is None:
            skips.append({"key": sample.key, "reason": "no box annotations"})
            continue
        w, h = sample.image.size
        gt = ground_truth(sample.boxes, w, h, view.classes, sample.label)
        counts["boxes_clipped"] = counts.get("boxes_clipped", 0) + gt.clipped
        counts["boxes_skipped"] = counts.get("boxes_skipped", 0) + len(gt.skipped)
        for reason in gt.skipped:
            skips.append({"key": sample.key, "reason": reason})
        if not gt.classes:
            reason = "only difficult boxes" if len(gt.labels) else "no usable box"
            skips.append({"key": sample.key, "reason": reason})
            continue
        yield sample, gt
    if with_boxes == 0:
        raise UserError(f"the data ({view.kind}, split {view.split}) has no box annotations: localisation needs "
                        "boxes (VOC or ILSVRC XML annotations, or shards made from them)")


def _load_locnets(cfg: LocaliseEvalConfig, classes: list[str], runner: Runner) -> tuple[list[LocNet], list[dict]]:
    nets, infos = [], []
    for i, path in enumerate(cfg.checkpoints):
        model, info = load_localiser(path)
        order = class_order(f"localisation net {path}", info.classes, len(info.classes), classes)
        s = info.train_scale
        if cfg.net_scales is not None:
            if len(cfg.net_scales) != len(cfg.checkpoints):
                raise UserError(f"net_scales has {len(cfg.net_scales)} lists for {len(cfg.checkpoints)} checkpoints")
            scales = list(cfg.net_scales[i])
        else:
            scales = list(cfg.scales) if cfg.scales else ([s] if s else [])
        if not scales:
            raise UserError(f"{path}: records no training scale; give --scales")
        low = [q for q in scales if q < model.cfg.crop]
        if low:
            raise UserError(f"{path}: test scales {low} are below its crop size {model.cfg.crop}")
        norm = normalization_of({"meta": info.meta})
        nets.append(LocNet(runner.prepare(model), info, norm, scales, order))
        infos.append({"checkpoint": str(path), "sha256": sha256_file(path), "head": info.head,
                      "fine_tune": info.fine_tune, "train_scale": s, "scales": scales,
                      "model": model.cfg.model_dump(mode="json")})
    return nets, infos


def baseline_errors(guess_classes: list[int], gt: GroundTruth, size: tuple[int, int], k: int,
                    thr: float) -> dict[str, float]:
    """Localisation error of one image when every guessed class gets the whole image or its centre quarter."""
    boxes = {"whole image": whole_image_box(*size), "centre quarter": centre_quarter_box(*size)}
    return {name: image_localisation_error([(c, box) for c in guess_classes], gt, k, thr) for name, box in boxes.items()}


def crop_protocol_errors(nets: list[LocNet], batch: list[tuple[Any, GroundTruth]], runner: Runner,
                         thr: float) -> tuple[list[list[float]], list[list[dict]]]:
    """Central-crop protocol on a batch: per net, per image error (GT classes) and the boxes guessed."""
    errors: list[list[float]] = []
    boxes_out: list[list[dict]] = []
    for net in nets:
        crops, geo = [], []
        for sample, _ in batch:
            bc, scale, off = centre_crop(sample.image, None, net.scales[0], net.crop)
            crops.append(bc.image)
            geo.append((scale, off, sample.image.size))
        x = normalize(torch.stack(crops), net.norm)
        preds = crop_predictions(net, x, runner)
        errs, outs = [], []
        for (sample, gt), pred, (scale, off, size) in zip(batch, preds, geo):
            guesses = [(c, crop_box_in_image(pred[net.slot(c)], net.crop, scale, off, size)) for c in gt.classes]
            errs.append(image_localisation_error(guesses, gt, k=len(guesses), threshold=thr))
            outs.append({str(c): [round(v, 2) for v in b.tolist()] for c, b in guesses})
        errors.append(errs)
        boxes_out.append(outs)
    return errors, boxes_out


def skip_category(reason: str) -> str:
    """The summary category of a skip reason: without the box index, before any ':' or '('."""
    if reason.startswith("box ") and ":" in reason:
        reason = reason.split(":", 1)[1].strip()
    return reason.split(":", 1)[0].split(" (", 1)[0].strip()


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _crop_table(rows: list[dict], split: str) -> str:
    lines = ["Localisation error, central crop and ground-truth class (Table 8 format)", "",
             f"| Fine-tuned layers | regression type | GT class localisation error (%), {split} |",
             "|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['fine_tuned']} | {r['regression']} | {_pct(r['error'])} |")
    return "\n".join(lines) + "\n"


def _dense_table(rows: list[dict], split: str, k: int) -> str:
    lines = ["Localisation error, dense application and greedy merging (Table 9 format)", "",
             f"| train (S) | test (Q) | top-{k} localisation error (%), {split} | top-1 (%) |",
             "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['train']} | {r['test']} | {_pct(r['error'])} | {_pct(r['error_top1'])} |")
    return "\n".join(lines) + "\n"


def _scales_str(qs: list[int]) -> str:
    return ",".join(str(q) for q in qs)


def run_localise_evaluate(cfg: LocaliseEvalConfig) -> dict[str, Any]:
    """Evaluate localisation nets with the crop or dense protocol (paper A.1-A.2).

    Args:
        cfg: checkpoints, classifier (dense), data, protocol, scales, merging, device.
    Returns:
        The summary written to ``loc_eval.json``: one row per net (and fusion), the baselines,
        classification error (dense), image counts and skips.
    Raises:
        UserError: bad checkpoints, class counts that differ from the data's, data without boxes,
            no usable image.
    """
    from pipeline.data import open_data
    from pipeline.shards.progress import Progress

    view = open_data(cfg.data, cfg.split, cfg.format)
    classes = list(view.classes)
    runner = Runner(resolve_device(cfg.device), cfg.channels_last, cfg.bf16, cfg.threads)
    nets, net_infos = _load_locnets(cfg, classes, runner)
    classifier = class_norm = class_idx = None
    class_info: dict[str, Any] | None = None
    if cfg.protocol == "dense":
        if not cfg.classifier:
            raise UserError("the dense protocol needs --classifier (a classification checkpoint)")
        model, ck = load_model(cfg.classifier)
        if (ck.get("meta") or {}).get("localise"):
            raise UserError(f"{cfg.classifier} is a localisation net, not a classification net")
        class_idx = class_order(f"classifier {cfg.classifier}", (ck.get("meta") or {}).get("classes"),
                                model.cfg.num_classes, classes)
        classifier, class_norm = runner.prepare(model), normalization_of(ck)
        class_info = {"checkpoint": cfg.classifier, "sha256": sha256_file(cfg.classifier),
                      "train_scale": (ck.get("meta") or {}).get("train_scale"), "model": model.cfg.model_dump(mode="json")}
    k, thr = cfg.top_k, cfg.iou_threshold
    skips: list[dict[str, str]] = []
    counts: dict[str, int] = {}
    per: dict[str, list[float]] = {}
    per_top1: dict[str, list[float]] = {}
    cls_err: list[float] = []
    records: list[dict[str, Any]] = []
    total = min(len(view), cfg.limit) if cfg.limit else len(view)
    with Progress(total, f"localise {cfg.protocol}", enabled=cfg.progress) as bar:
        if cfg.protocol == "crop":
            batch: list[tuple[Any, GroundTruth]] = []

            def flush() -> None:
                errs, boxes = crop_protocol_errors(nets, batch, runner, thr)
                for j, (sample, gt) in enumerate(batch):
                    rec: dict[str, Any] = {"key": sample.key, "gt_classes": gt.classes, "error": {}, "boxes": {}}
                    for i in range(len(nets)):
                        per.setdefault(f"net{i}", []).append(errs[i][j])
                        rec["error"][f"net{i}"] = errs[i][j]
                        rec["boxes"][f"net{i}"] = boxes[i][j]
                    for name, e in baseline_errors(gt.classes, gt, sample.image.size, len(gt.classes), thr).items():
                        per.setdefault(name, []).append(e)
                        rec["error"][name] = e
                    records.append(rec)
                bar.advance(len(batch))
                batch.clear()

            for sample, gt in iter_ground_truth(view, cfg.limit, skips, counts):
                batch.append((sample, gt))
                if len(batch) >= cfg.batch_size:
                    flush()
            if batch:
                flush()
        else:
            pending: dict[tuple[int, int], list[tuple[int, Any, GroundTruth]]] = {}

            def run_group(size: tuple[int, int]) -> None:
                group = pending.pop(size)
                results = dense_localise(nets, classifier, class_norm, [s.image for _, s, _ in group], runner,
                                         cfg.merge, k=k, class_scales=cfg.class_scales, flip=cfg.flip,
                                         class_order=class_idx)
                for (index, sample, gt), res in zip(group, results):
                    rec = {"index": index, "key": sample.key, "gt_classes": gt.classes, "top": res.top,
                           "error": {}, "error_top1": {}, "guesses": {}}
                    for name, guesses in res.guesses.items():
                        g = [(c, b) for c, b, _ in guesses]
                        rec["error"][name] = image_localisation_error(g, gt, k, thr)
                        rec["error_top1"][name] = image_localisation_error(g, gt, 1, thr)
                        rec["guesses"][name] = [[c, [round(v, 2) for v in b.tolist()], round(sc, 4)]
                                                for c, b, sc in guesses]
                    rec["error"].update(baseline_errors(res.top, gt, sample.image.size, k, thr))
                    rec["error_top1"].update(baseline_errors(res.top, gt, sample.image.size, 1, thr))
                    rec["classification_error"] = image_classification_error(res.top, gt.classes, k)
                    records.append(rec)
                bar.advance(len(group))

            for index, (sample, gt) in enumerate(iter_ground_truth(view, cfg.limit, skips, counts)):
                size = sample.image.size
                pending.setdefault(size, []).append((index, sample, gt))
                if len(pending[size]) >= cfg.batch_size:
                    run_group(size)
                elif sum(len(v) for v in pending.values()) >= cfg.max_buffered:
                    run_group(max(pending, key=lambda sz: len(pending[sz])))
            for size in list(pending):
                run_group(size)
            records.sort(key=lambda r: r["index"])  # back to data order
            for rec in records:
                del rec["index"]
                for name, e in rec["error"].items():
                    per.setdefault(name, []).append(e)
                    per_top1.setdefault(name, []).append(rec["error_top1"][name])
                cls_err.append(rec["classification_error"])
    n = len(records)
    if n == 0:
        raise UserError(f"no usable image in {cfg.data} (split {view.split}): "
                        f"{skips[0]['reason'] if skips else 'empty split'}")
    mean = {name: float(np.mean(v)) for name, v in per.items()}
    mean1 = {name: float(np.mean(v)) for name, v in per_top1.items()}
    rows: list[dict[str, Any]] = []
    if cfg.protocol == "crop":
        for i, info in enumerate(net_infos):
            rows.append({"name": f"net{i}", "fine_tuned": "all" if info["fine_tune"] == "all" else "1st and 2nd FC",
                         "regression": info["head"].upper(), "scale": info["scales"][0], "error": mean[f"net{i}"]})
        for b in BASELINES:
            rows.append({"name": b, "fine_tuned": "-", "regression": f"{b} (baseline)", "error": mean[b]})
        table = _crop_table(rows, view.split)
    else:
        for i, info in enumerate(net_infos):
            rows.append({"name": f"net{i}", "train": str(info["train_scale"]), "test": _scales_str(info["scales"]),
                         "error": mean[f"net{i}"], "error_top1": mean1[f"net{i}"]})
        if "fusion" in mean:
            parts = " and ".join(f"{info['train_scale']}/{_scales_str(info['scales'])}" for info in net_infos)
            rows.append({"name": "fusion", "train": f"fusion: {parts}", "test": "", "error": mean["fusion"],
                         "error_top1": mean1["fusion"]})
        for b in BASELINES:
            rows.append({"name": b, "train": f"{b} (baseline, same top-{k} classes)", "test": "",
                         "error": mean[b], "error_top1": mean1[b]})
        table = _dense_table(rows, view.split, k)
    by_reason: dict[str, int] = {}
    for s in skips:
        cat = skip_category(s["reason"])
        by_reason[cat] = by_reason.get(cat, 0) + 1
    summary: dict[str, Any] = {
        "format": "vgg-localise-eval/1",
        "protocol": cfg.protocol,
        "data": {"path": cfg.data, "split": view.split, "kind": view.kind, "fingerprint": view.fingerprint,
                 "classes": classes},
        "nets": net_infos,
        "classifier": class_info,
        "top_k": k if cfg.protocol == "dense" else None,
        "iou_threshold": thr,
        "merge": cfg.merge.model_dump() | {"threshold_used": cfg.merge.t} if cfg.protocol == "dense" else None,
        "rows": rows,
        "classification_error": float(np.mean(cls_err)) if cls_err else None,
        "images": {"seen": counts.get("images", 0), "evaluated": n, "skipped": len({s["key"] for s in skips
                                                                                     if not s["reason"].startswith("box ")})},
        "boxes": {"clipped": counts.get("boxes_clipped", 0), "skipped": counts.get("boxes_skipped", 0)},
        "skips": {"by_reason": by_reason, "listed": skips[:MAX_SKIPS_LISTED]},
        "table": table,
        "config": cfg.model_dump(mode="json"),
    }
    if cfg.out:
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
        atomic_write_text(out / "loc_table.md", table)
        atomic_write_text(out / "predictions.jsonl", "".join(json.dumps(r) + "\n" for r in records))
        atomic_write_json(out / "loc_eval.json", summary)
    return summary
