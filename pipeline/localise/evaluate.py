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
errors), ``config.yaml`` and ``loc_eval.json`` (the summary, written last, with the run's identity:
the config, the inputs' sha256 and the data's fingerprint). A run of the same identity returns the
saved summary; any other run replaces it (:mod:`pipeline.reuse`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from pipeline.config import save_config
from pipeline.errors import UserError
from pipeline.evaluate.posteriors import posteriors_file
from pipeline.io import atomic_write_text, sha256_file
from pipeline.localise.augment import centre_crop
from pipeline.localise.boxes import GroundTruth, centre_quarter_box, ground_truth, whole_image_box
from pipeline.localise.merge import MergeConfig
from pipeline.localise.metric import image_classification_error, image_localisation_error
from pipeline.localise.net import load_localiser
from pipeline.localise.protocols import LocNet, Runner, crop_box_in_image, crop_predictions, dense_localise
from pipeline.localise.selection import TopClasses, image_index, load_top_classes, read_blacklist
from pipeline.localise.tables import BASELINES, crop_rows, crop_table, dense_rows, dense_table
from pipeline.models import load_model
from pipeline.preprocess import normalization_of, normalize
from pipeline.results import LocaliseEvalOutputs, LocaliseEvalResult
from pipeline.reuse import config_fields, identity, input_digests, record_finished, saved_result
from pipeline.runtime import Progress, RuntimeConfig, RuntimeStageConfig, resolve_bf16, resolve_device

__all__ = ["LocaliseEvalConfig", "run_localise_evaluate", "BASELINES", "runner_for", "class_order",
           "class_names", "iter_ground_truth", "crop_protocol_errors", "centre_boxes", "skip_category",
           "baseline_errors"]

MAX_SKIPS_LISTED = 1000
#: the format of loc_eval.json (its identity's version)
SUMMARY_FORMAT = "vgg-localise-eval/2"


class LocaliseEvalConfig(RuntimeStageConfig):
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
    fusion_nets: list[int] | None = Field(None, description="dense protocol: indices (checkpoint order) of the nets "
                                          "whose boxes are united for the fusion row (default all; Table 9 fuses two "
                                          "of its rows)")
    class_scales: list[int] | None = Field(None, description="scales of the classification protocol giving the "
                                                             "top-5 classes (default: the localisation scales)")
    flip: bool = Field(True, description="the classification protocol averages in the flipped image (paper: on)")
    posteriors: list[str] = Field(default_factory=list, description="saved classification results giving the top-k "
                                  "classes (posteriors.npz of `vgg evaluate`, or its folder; several: their nets "
                                  "fused), as the paper takes them from its best classification system; none: the "
                                  "classifier's dense evaluation")
    posteriors_method: Literal["dense", "multicrop", "both"] = Field(
        "both", description="which saved posteriors give the classes: dense, multicrop or both (their combination)")
    posteriors_nets: list[int] | None = Field(None, description="indices of the saved nets to fuse (default all)")
    blacklist: str | None = Field(None, description="devkit blacklist (ILSVRC2014_clsloc_validation_blacklist.txt "
                                  "format: one 1-based validation image index per line): those images are left out "
                                  "of the localisation error only")
    centre_crop_rows: bool = Field(True, description="dense protocol: also rate each net's central-crop box for the "
                                   "same top-k classes (Table 9 against Table 8's protocol)")
    top_k: int = Field(5, ge=1, description="(label, box) guesses per image (ILSVRC: 5); the error at 1 is "
                                            "reported too")
    iou_threshold: float = Field(0.5, gt=0, le=1, description="a box is correct at IoU >= this (ILSVRC: 0.5)")
    merge: MergeConfig = Field(default_factory=MergeConfig, description="OverFeat greedy merging (dense protocol)")
    batch_size: int = Field(32, ge=1, description="images per forward pass (central crops; dense: images of one size)")
    max_buffered: int = Field(256, ge=1, description="dense protocol: most images held while same-size batches fill")
    limit: int | None = Field(None, ge=1, description="evaluate only the first N images of the split")
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


def runner_for(rt: RuntimeConfig) -> Runner:
    """Where and how the nets run, from a stage's ``runtime`` section."""
    device = resolve_device(rt.device)
    return Runner(device, rt.channels_last, resolve_bf16(rt.bf16, device), rt.threads)


def class_names(view: Any) -> list[str] | None:
    """The data's human-readable class names where its classes are ids (ILSVRC wnids named by
    ``LOC_synset_mapping.txt`` or the devkit), else None."""
    words = getattr(getattr(view, "source", None), "words", None) or {}
    names = [str(words.get(c, c)).split(",")[0].strip() for c in view.classes]
    return names if words and names != list(view.classes) else None


def class_order(what: str, theirs: list[str] | None, count: int, classes: list[str],
                names: list[str] | None = None) -> np.ndarray | None:
    """How a net's outputs map to the data's classes: None (same order) or ``order[c]`` = the net's index of class c.

    A net's classes match the data's by their ids, or else by their names (``names``, from
    :func:`class_names`: a Fashion-MNIST classifier on the ILSVRC-style set, whose wnids are named).

    Raises:
        UserError: another class count, or (when the net records names) other class names.
    """
    if count != len(classes):
        raise UserError(f"{what} has {count} classes but the data has {len(classes)}; "
                        "use a net trained on the same classes")
    if not theirs or list(theirs) == list(classes):
        return None
    if names is not None and sorted(theirs) == sorted(names) and sorted(theirs) != sorted(classes):
        classes = names
        if list(theirs) == list(classes):
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
    return {
        name: image_localisation_error([(c, box) for c in guess_classes], gt, k, thr) for name, box in boxes.items()
    }


def centre_boxes(net: LocNet, batch: list[tuple[Any, GroundTruth]], runner: Runner,
                 classes: list[list[int]]) -> list[list[tuple[int, np.ndarray]]]:
    """Central-crop boxes of a batch (the first protocol): per image, (class, box in the image) for its ``classes``."""
    crops, geo = [], []
    for sample, _ in batch:
        bc, scale, off = centre_crop(sample.image, None, net.scales[0], net.crop)
        crops.append(bc.image)
        geo.append((scale, off, sample.image.size))
    preds = crop_predictions(net, normalize(torch.stack(crops), net.norm), runner)
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


def skip_category(reason: str) -> str:
    """The summary category of a skip reason: without the box index, before any ':' or '('."""
    if reason.startswith("box ") and ":" in reason:
        reason = reason.split(":", 1)[1].strip()
    return reason.split(":", 1)[0].split(" (", 1)[0].strip()


@dataclass
class _Dense:
    """What the dense protocol needs besides the localisation nets."""

    classifier: Any
    norm: Any
    order: np.ndarray | None
    info: dict[str, Any]
    top: TopClasses | None


def _load_dense(cfg: LocaliseEvalConfig, view: Any, runner: Runner) -> _Dense:
    if not cfg.classifier:
        raise UserError("the dense protocol needs --classifier (a classification checkpoint rating the boxes)")
    model, ck = load_model(cfg.classifier)
    if (ck.get("meta") or {}).get("localise"):
        raise UserError(f"{cfg.classifier} is a localisation net, not a classification net")
    names = class_names(view)
    order = class_order(f"classifier {cfg.classifier}", (ck.get("meta") or {}).get("classes"),
                        model.cfg.num_classes, list(view.classes), names)
    info = {"checkpoint": cfg.classifier, "sha256": sha256_file(cfg.classifier),
            "train_scale": (ck.get("meta") or {}).get("train_scale"), "model": model.cfg.model_dump(mode="json")}
    top = None
    if cfg.posteriors:
        top = load_top_classes(cfg.posteriors, cfg.posteriors_method, cfg.posteriors_nets, list(view.classes), names)
    return _Dense(runner.prepare(model), normalization_of(ck), order, info, top)


def _crop_records(cfg: LocaliseEvalConfig, view: Any, nets: list[LocNet], runner: Runner, bar: Any,
                  skips: list, counts: dict) -> list[dict[str, Any]]:
    """Per-image records of the central-crop protocol (GT classes)."""
    records: list[dict[str, Any]] = []
    batch: list[tuple[Any, GroundTruth]] = []
    positions: list[int] = []

    def flush() -> None:
        errs, boxes = crop_protocol_errors(nets, batch, runner, cfg.iou_threshold)
        for j, (sample, gt) in enumerate(batch):
            rec: dict[str, Any] = {"key": sample.key, "index": image_index(sample.key, positions[j]),
                                   "gt_classes": gt.classes, "error": {}, "boxes": {}}
            for i in range(len(nets)):
                rec["error"][f"net{i}"] = errs[i][j]
                rec["boxes"][f"net{i}"] = boxes[i][j]
            rec["error"].update(baseline_errors(gt.classes, gt, sample.image.size, len(gt.classes), cfg.iou_threshold))
            records.append(rec)
        bar.advance(len(batch))
        batch.clear()
        positions.clear()

    for sample, gt in iter_ground_truth(view, cfg.limit, skips, counts):
        batch.append((sample, gt))
        positions.append(counts["images"])
        if len(batch) >= cfg.batch_size:
            flush()
    if batch:
        flush()
    return records


def _dense_group(cfg: LocaliseEvalConfig, nets: list[LocNet], dense: _Dense, runner: Runner,
                 group: list[tuple[int, Any, GroundTruth]]) -> list[dict[str, Any]]:
    """Records of one batch of same-size images under the dense protocol (and each net's central crop)."""
    k, thr = cfg.top_k, cfg.iou_threshold
    tops = None if dense.top is None else [dense.top.top(s.key, k) for _, s, _ in group]
    results = dense_localise(nets, dense.classifier, dense.norm, [s.image for _, s, _ in group], runner, cfg.merge,
                             k=k, class_scales=cfg.class_scales, flip=cfg.flip, class_order=dense.order, top=tops,
                             fusion=True if cfg.fusion_nets is None else cfg.fusion_nets)
    # each checkpoint's central crop once (a checkpoint listed twice, at other scales, crops the same)
    firsts = [i for i, c in enumerate(cfg.checkpoints) if cfg.checkpoints.index(c) == i] if cfg.centre_crop_rows else []
    crops = {i: centre_boxes(nets[i], [(s, gt) for _, s, gt in group], runner, [r.top for r in results])
             for i in firsts}
    out = []
    for j, ((pos, sample, gt), res) in enumerate(zip(group, results, strict=False)):
        rec = {"key": sample.key, "index": image_index(sample.key, pos), "gt_classes": gt.classes, "top": res.top,
               "error": {}, "error_top1": {}, "guesses": {}}
        named = {name: [(c, b) for c, b, _ in g] for name, g in res.guesses.items()}
        named.update({f"net{i} crop": boxes[j] for i, boxes in crops.items()})
        for name, g in named.items():
            rec["error"][name] = image_localisation_error(g, gt, k, thr)
            rec["error_top1"][name] = image_localisation_error(g, gt, 1, thr)
        for name, guesses in res.guesses.items():
            rec["guesses"][name] = [[c, [round(v, 2) for v in b.tolist()], round(sc, 4)] for c, b, sc in guesses]
        rec["error"].update(baseline_errors(res.top, gt, sample.image.size, k, thr))
        rec["error_top1"].update(baseline_errors(res.top, gt, sample.image.size, 1, thr))
        rec["classification_error"] = image_classification_error(res.top, gt.classes, k)
        out.append(rec)
    return out


def _dense_records(cfg: LocaliseEvalConfig, view: Any, nets: list[LocNet], dense: _Dense, runner: Runner, bar: Any,
                   skips: list, counts: dict) -> list[dict[str, Any]]:
    """Per-image records of the dense protocol, in data order (images batched by size)."""
    records: list[dict[str, Any]] = []
    pending: dict[tuple[int, int], list[tuple[int, Any, GroundTruth]]] = {}
    order: dict[str, int] = {}

    def run_group(size: tuple[int, int]) -> None:
        group = pending.pop(size)
        records.extend(_dense_group(cfg, nets, dense, runner, group))
        bar.advance(len(group))

    for n, (sample, gt) in enumerate(iter_ground_truth(view, cfg.limit, skips, counts)):
        order[sample.key] = n
        size = sample.image.size
        pending.setdefault(size, []).append((counts["images"], sample, gt))
        if len(pending[size]) >= cfg.batch_size:
            run_group(size)
        elif sum(len(v) for v in pending.values()) >= cfg.max_buffered:
            run_group(max(pending, key=lambda sz: len(pending[sz])))
    for size in list(pending):
        run_group(size)
    records.sort(key=lambda r: order[r["key"]])  # back to data order
    return records


def _means(records: list[dict[str, Any]], field: str) -> dict[str, float]:
    """Mean of each method's per-image error over the records not blacklisted (the devkit's denominator)."""
    kept = [r for r in records if not r["blacklisted"]]
    if not kept:
        raise UserError("every evaluated image is blacklisted: no localisation error to report")
    return {name: float(np.mean([r[field][name] for r in kept])) for name in kept[0][field]}


def _skip_counts(skips: list[dict[str, str]]) -> dict[str, int]:
    by_reason: dict[str, int] = {}
    for s in skips:
        cat = skip_category(s["reason"])
        by_reason[cat] = by_reason.get(cat, 0) + 1
    return by_reason


def run_localise_evaluate(cfg: LocaliseEvalConfig) -> LocaliseEvalResult:
    """Evaluate localisation nets with the crop or dense protocol (paper A.1-A.2).

    Args:
        cfg: checkpoints, classifier (dense), data, protocol, scales, merging, top-k source, blacklist, device.
    Returns:
        The summary written to ``loc_eval.json``: one row per net (and fusion), the baselines,
        classification error (dense), image counts (blacklisted ones too) and skips.
    Raises:
        UserError: bad checkpoints, class counts that differ from the data's, data without boxes,
            no usable image, a bad blacklist, posteriors of other images.
    """
    from pipeline.data import open_data

    view = open_data(cfg.data, cfg.split, cfg.format)
    ident = _identity(cfg, view) if cfg.out else None
    saved = saved_result(Path(cfg.out or ".") / "loc_eval.json", ident, "a localisation evaluation")
    if saved is not None:  # an identical finished run: its saved summary
        return LocaliseEvalResult(**{**saved, "status": "exists"})
    classes = list(view.classes)
    runner = runner_for(cfg.runtime)
    nets, net_infos = _load_locnets(cfg, classes, runner)
    bad = [i for i in cfg.fusion_nets or [] if not 0 <= i < len(nets)]
    if bad:
        raise UserError(f"fusion_nets {bad}: there are {len(nets)} nets (0..{len(nets) - 1})")
    dense = _load_dense(cfg, view, runner) if cfg.protocol == "dense" else None
    blacklist = read_blacklist(cfg.blacklist) if cfg.blacklist else set()
    skips: list[dict[str, str]] = []
    counts: dict[str, int] = {}
    total = min(len(view), cfg.limit) if cfg.limit else len(view)
    with Progress(total, f"localise {cfg.protocol}", enabled=cfg.progress) as bar:
        if dense is None:
            records = _crop_records(cfg, view, nets, runner, bar, skips, counts)
        else:
            records = _dense_records(cfg, view, nets, dense, runner, bar, skips, counts)
    if not records:
        raise UserError(f"no usable image in {cfg.data} (split {view.split}): "
                        f"{skips[0]['reason'] if skips else 'empty split'}")
    for r in records:
        r["blacklisted"] = r["index"] in blacklist
    n_black = sum(r["blacklisted"] for r in records)
    images = {"seen": counts.get("images", 0), "evaluated": len(records), "localisation": len(records) - n_black,
              "blacklisted": n_black,
              "skipped": len({s["key"] for s in skips if not s["reason"].startswith("box ")})}
    mean = _means(records, "error")
    if dense is None:
        rows = crop_rows(net_infos, mean)
        table = crop_table(rows, view.split, images)
        cls_err = classes_from = None
    else:
        rows = dense_rows(net_infos, mean, _means(records, "error_top1"), cfg.top_k, cfg.fusion_nets)
        classes_from = (f"saved posteriors ({cfg.posteriors_method}: {', '.join(cfg.posteriors)})" if cfg.posteriors
                        else f"the dense evaluation of {cfg.classifier}")
        table = dense_table(rows, view.split, cfg.top_k, images, classes_from)
        cls_err = float(np.mean([r["classification_error"] for r in records]))  # every image, blacklisted or not
    summary: dict[str, Any] = {
        "format": SUMMARY_FORMAT,
        "protocol": cfg.protocol,
        "data": {"path": cfg.data, "split": view.split, "kind": view.kind, "fingerprint": view.fingerprint,
                 "classes": classes},
        "nets": net_infos,
        "classifier": dense.info if dense else None,
        "top_classes_from": ({"posteriors": dense.top.source} if dense and dense.top else
                             {"dense_evaluation": cfg.classifier} if dense else None),
        "top_k": cfg.top_k if dense else None,
        "iou_threshold": cfg.iou_threshold,
        "merge": cfg.merge.model_dump() | {"threshold_used": cfg.merge.t} if dense else None,
        "rows": rows,
        "classification_error": cls_err,
        "images": images,
        "blacklist": {"file": cfg.blacklist, "entries": len(blacklist),
                      "dropped": [r["key"] for r in records if r["blacklisted"]][:MAX_SKIPS_LISTED]},
        "boxes": {"clipped": counts.get("boxes_clipped", 0), "skipped": counts.get("boxes_skipped", 0)},
        "skips": {"by_reason": _skip_counts(skips), "listed": skips[:MAX_SKIPS_LISTED]},
        "table": table,
        "config": cfg.model_dump(mode="json"),
    }
    if cfg.out:
        _write(cfg, records, summary, ident)
    return LocaliseEvalResult(**summary)


def _identity(cfg: LocaliseEvalConfig, view: Any) -> dict[str, Any] | None:
    """What the summary depends on (:mod:`pipeline.reuse`): the config, the inputs' sha256, the data's fingerprint.

    None when an input file is missing (the stage then fails on it with its own message).
    """
    files = [*cfg.checkpoints, *([cfg.classifier] if cfg.classifier else []),
             *[posteriors_file(p) for p in cfg.posteriors], *([cfg.blacklist] if cfg.blacklist else [])]
    digests = input_digests(files)
    if digests is None:
        return None
    return identity(format=SUMMARY_FORMAT, config=config_fields(cfg), inputs=digests, data=view.fingerprint)


def _write(cfg: LocaliseEvalConfig, records: list[dict[str, Any]], summary: dict[str, Any],
           ident: dict[str, Any] | None) -> None:
    """config.yaml, loc_table.md, predictions.jsonl, then loc_eval.json (written last)."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    files = LocaliseEvalOutputs(config=str(out / "config.yaml"), table=str(out / "loc_table.md"),
                                predictions=str(out / "predictions.jsonl"), summary=str(out / "loc_eval.json"))
    summary["outputs"] = files.model_dump()
    save_config(cfg, files.config)
    atomic_write_text(files.table, summary["table"])
    atomic_write_text(files.predictions, "".join(json.dumps(r) + "\n" for r in records))
    if ident is not None:
        summary["identity"] = ident
    record_finished(files.summary, ident or {}, summary)  # last: its presence means the evaluation is finished
