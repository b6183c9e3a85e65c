"""The localisation evaluation (paper Appendix A.2, Tables 8 and 9): its nets, one record per usable image (each
method's guesses and error, baselines included), the summary and the files (docs/formats.md section 4.9).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import save_config
from pipeline.errors import UserError
from pipeline.evaluate.posteriors import posteriors_file
from pipeline.io import atomic_write_text, sha256_file
from pipeline.localise.boxes import (
    GroundTruth,
    centre_quarter_box,
    image_classification_error,
    image_localisation_error,
    whole_image_box,
)
from pipeline.localise.config import LocaliseEvalConfig
from pipeline.localise.net import load_classifier, load_localiser
from pipeline.localise.protocols import (
    DenseSettings,
    LocNet,
    Rater,
    Runner,
    centre_boxes,
    crop_protocol_errors,
    dense_localise,
)
from pipeline.localise.selection import (
    MAX_LISTED,
    TopClasses,
    class_names,
    class_order,
    image_index,
    iter_ground_truth,
    load_top_classes,
    read_blacklist,
    skip_summary,
)
from pipeline.localise.tables import crop_rows, crop_table, dense_rows, dense_table
from pipeline.preprocess import normalization_of
from pipeline.results import LocaliseEvalOutputs
from pipeline.reuse import config_fields, identity, input_digests, record_finished

__all__ = ["SUMMARY_FORMAT", "Evaluation", "open_evaluation", "image_records", "summarise", "evaluation_identity",
           "write_evaluation"]

#: the format of loc_eval.json (its identity's version)
SUMMARY_FORMAT = "vgg-localise-eval/2"


@dataclass
class Evaluation:
    """One localisation evaluation: the nets and what the records of either protocol need."""

    cfg: LocaliseEvalConfig
    view: Any
    runner: Runner
    nets: list[LocNet]
    net_infos: list[dict[str, Any]]
    rater: Rater | None = None  #: dense protocol: the classification net
    rater_info: dict[str, Any] | None = None
    top: TopClasses | None = None  #: dense protocol: the top-k classes from saved posteriors
    blacklist: set[int] = field(default_factory=set)  #: 1-based indices left out of the localisation error
    bar: Any = None
    skips: list[dict[str, str]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


def _load_nets(cfg: LocaliseEvalConfig, classes: list[str], runner: Runner) -> tuple[list[LocNet], list[dict]]:
    """The localisation nets at their test scales, and what the summary says of each."""
    nets, infos = [], []
    if cfg.net_scales is not None and len(cfg.net_scales) != len(cfg.checkpoints):
        raise UserError(f"net_scales has {len(cfg.net_scales)} lists for {len(cfg.checkpoints)} checkpoints")
    for i, path in enumerate(cfg.checkpoints):
        model, info = load_localiser(path)
        order = class_order(f"localisation net {path}", info.classes, len(info.classes), classes)
        s = info.train_scale
        scales = list(cfg.net_scales[i] if cfg.net_scales is not None else cfg.scales or ([s] if s else []))
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
    bad = [i for i in cfg.fusion_nets or [] if not 0 <= i < len(nets)]
    if bad:
        raise UserError(f"fusion_nets {bad}: there are {len(nets)} nets (0..{len(nets) - 1})")
    return nets, infos


def open_evaluation(cfg: LocaliseEvalConfig, view: Any) -> Evaluation:
    """Load the localisation nets and, for the dense protocol, the classifier and the saved posteriors."""
    runner = Runner.of(cfg.runtime)
    ev = Evaluation(cfg, view, runner, *_load_nets(cfg, list(view.classes), runner))
    ev.blacklist = read_blacklist(cfg.blacklist) if cfg.blacklist else set()
    if cfg.protocol == "dense":
        if not cfg.classifier:
            raise UserError("the dense protocol needs --classifier (a classification checkpoint rating the boxes)")
        names = class_names(view)
        model, ck, order = load_classifier(cfg.classifier, list(view.classes), names)
        ev.rater = Rater(runner.prepare(model), normalization_of(ck), order)
        ev.rater_info = {"checkpoint": cfg.classifier, "sha256": sha256_file(cfg.classifier),
                         "train_scale": (ck.get("meta") or {}).get("train_scale"),
                         "model": model.cfg.model_dump(mode="json")}
        if cfg.posteriors:
            ev.top = load_top_classes(cfg.posteriors, cfg.posteriors_method, cfg.posteriors_nets,
                                      list(view.classes), names)
    return ev


def _baselines(classes: list[int], size: tuple[int, int]) -> dict[str, list[tuple[int, np.ndarray]]]:
    """The guesses of the two boxes that need no net (docs/formats.md 4.7), one per class of ``classes``."""
    boxes = {"whole image": whole_image_box(*size), "centre quarter": centre_quarter_box(*size)}
    return {name: [(c, b) for c in classes] for name, b in boxes.items()}


def _crop_group(ev: Evaluation, group: list[tuple[int, Any, GroundTruth]]) -> list[dict[str, Any]]:
    """Records of one batch under the central-crop protocol (GT classes)."""
    thr = ev.cfg.iou_threshold
    errs, boxes = crop_protocol_errors(ev.nets, [(s, gt) for _, s, gt in group], ev.runner, thr)
    out = []
    for j, (pos, sample, gt) in enumerate(group):
        base = _baselines(gt.classes, sample.image.size)
        out.append({"key": sample.key, "index": image_index(sample.key, pos), "gt_classes": gt.classes,
                    "error": {f"net{i}": e[j] for i, e in enumerate(errs)}
                    | {name: image_localisation_error(g, gt, len(gt.classes), thr) for name, g in base.items()},
                    "boxes": {f"net{i}": b[j] for i, b in enumerate(boxes)}})
    return out


def _dense_group(ev: Evaluation, group: list[tuple[int, Any, GroundTruth]]) -> list[dict[str, Any]]:
    """Records of one batch of same-size images under the dense protocol (and each net's central crop)."""
    cfg = ev.cfg
    k, thr = cfg.top_k, cfg.iou_threshold
    tops = None if ev.top is None else [ev.top.top(s.key, k) for _, s, _ in group]
    how = DenseSettings(cfg.merge, k, cfg.class_scales, cfg.flip, cfg.fusion_nets)
    results = dense_localise(ev.nets, ev.rater, [s.image for _, s, _ in group], ev.runner, how, top=tops)
    # each checkpoint's central crop once (a checkpoint listed twice, at other scales, crops the same)
    firsts = [i for i, c in enumerate(cfg.checkpoints) if cfg.checkpoints.index(c) == i] if cfg.centre_crop_rows else []
    crops = {i: centre_boxes(ev.nets[i], [(s, gt) for _, s, gt in group], ev.runner, [r.top for r in results])
             for i in firsts}
    out = []
    for j, ((pos, sample, gt), res) in enumerate(zip(group, results, strict=False)):
        named = {name: [(c, b) for c, b, _ in g] for name, g in res.guesses.items()}
        named.update({f"net{i} crop": boxes[j] for i, boxes in crops.items()})
        named.update(_baselines(res.top, sample.image.size))
        out.append({"key": sample.key, "index": image_index(sample.key, pos), "gt_classes": gt.classes,
                    "top": res.top,
                    "error": {name: image_localisation_error(g, gt, k, thr) for name, g in named.items()},
                    "error_top1": {name: image_localisation_error(g, gt, 1, thr) for name, g in named.items()},
                    "guesses": {name: [[c, [round(v, 2) for v in b.tolist()], round(sc, 4)] for c, b, sc in g]
                                for name, g in res.guesses.items()},
                    "classification_error": image_classification_error(res.top, gt.classes, k)})
    return out


def image_records(ev: Evaluation) -> list[dict[str, Any]]:
    """Per-image records, in data order: central crops in batches of ``batch_size``; dense, images batched by
    size (at most ``max_buffered`` held while the batches fill)."""
    dense = ev.rater is not None
    make = _dense_group if dense else _crop_group
    done: list[tuple[int, dict[str, Any]]] = []
    pending: dict[tuple[int, int] | None, list[tuple[int, Any, GroundTruth]]] = {}

    def run_group(size: tuple[int, int] | None) -> None:
        group = pending.pop(size)
        done.extend(zip([pos for pos, _, _ in group], make(ev, group), strict=True))
        ev.bar.advance(len(group))

    for sample, gt in iter_ground_truth(ev.view, ev.cfg.limit, ev.skips, ev.counts):
        size = sample.image.size if dense else None
        pending.setdefault(size, []).append((ev.counts["images"], sample, gt))
        if len(pending[size]) >= ev.cfg.batch_size:
            run_group(size)
        elif dense and sum(len(v) for v in pending.values()) >= ev.cfg.max_buffered:
            run_group(max(pending, key=lambda sz: len(pending[sz])))
    for size in list(pending):
        run_group(size)
    return [r for _, r in sorted(done, key=lambda t: t[0])]  # back to data order


def _mean_errors(records: list[dict[str, Any]], key: str) -> dict[str, float]:
    """Mean of each method's per-image error over the records not blacklisted (the devkit's denominator)."""
    kept = [r for r in records if not r["blacklisted"]]
    if not kept:
        raise UserError("every evaluated image is blacklisted: no localisation error to report")
    return {name: float(np.mean([r[key][name] for r in kept])) for name in kept[0][key]}


def summarise(ev: Evaluation, records: list[dict[str, Any]]) -> dict[str, Any]:
    """The summary of ``loc_eval.json`` (the table's rows, images, blacklist, skips); flags blacklisted records."""
    cfg, view = ev.cfg, ev.view
    if not records:
        raise UserError(f"no usable image in {cfg.data} (split {view.split}): "
                        f"{ev.skips[0]['reason'] if ev.skips else 'empty split'}")
    for r in records:
        r["blacklisted"] = r["index"] in ev.blacklist
    n_black = sum(r["blacklisted"] for r in records)
    skipped = {s["key"] for s in ev.skips if not s["reason"].startswith("box ")}  # images, not single boxes
    images = {"seen": ev.counts.get("images", 0), "evaluated": len(records), "localisation": len(records) - n_black,
              "blacklisted": n_black, "skipped": len(skipped)}
    mean = _mean_errors(records, "error")
    dense = ev.rater_info is not None
    if not dense:
        rows = crop_rows(ev.net_infos, mean)
        table = crop_table(rows, view.split, images)
        cls_err = None
    else:
        rows = dense_rows(ev.net_infos, mean, _mean_errors(records, "error_top1"), cfg.top_k, cfg.fusion_nets)
        classes_from = (f"saved posteriors ({cfg.posteriors_method}: {', '.join(cfg.posteriors)})" if cfg.posteriors
                        else f"the dense evaluation of {cfg.classifier}")
        table = dense_table(rows, view.split, cfg.top_k, images, classes_from)
        cls_err = float(np.mean([r["classification_error"] for r in records]))  # every image, blacklisted or not
    return {
        "format": SUMMARY_FORMAT, "protocol": cfg.protocol,
        "data": {"path": cfg.data, "split": view.split, "kind": view.kind, "fingerprint": view.fingerprint,
                 "classes": list(view.classes)},
        "nets": ev.net_infos, "classifier": ev.rater_info,
        "top_classes_from": ({"posteriors": ev.top.source} if ev.top else
                             {"dense_evaluation": cfg.classifier} if dense else None),
        "top_k": cfg.top_k if dense else None, "iou_threshold": cfg.iou_threshold,
        "merge": cfg.merge.model_dump() | {"threshold_used": cfg.merge.t} if dense else None,
        "rows": rows, "classification_error": cls_err, "images": images,
        "blacklist": {"file": cfg.blacklist, "entries": len(ev.blacklist),
                      "dropped": [r["key"] for r in records if r["blacklisted"]][:MAX_LISTED]},
        "boxes": {"clipped": ev.counts.get("boxes_clipped", 0), "skipped": ev.counts.get("boxes_skipped", 0)},
        "skips": skip_summary(ev.skips), "table": table, "config": cfg.model_dump(mode="json"),
    }


def evaluation_identity(cfg: LocaliseEvalConfig, view: Any) -> dict[str, Any] | None:
    """What the summary depends on: the config, the inputs' sha256, the data's fingerprint (None: an input is
    missing, and the stage then fails on it with its own message)."""
    files = [*cfg.checkpoints, *([cfg.classifier] if cfg.classifier else []),
             *[posteriors_file(p) for p in cfg.posteriors], *([cfg.blacklist] if cfg.blacklist else [])]
    digests = input_digests(files)
    return None if digests is None else identity(format=SUMMARY_FORMAT, config=config_fields(cfg), inputs=digests,
                                                 data=view.fingerprint)


def write_evaluation(cfg: LocaliseEvalConfig, records: list[dict[str, Any]], summary: dict[str, Any],
                     ident: dict[str, Any] | None) -> None:
    """config.yaml, loc_table.md, predictions.jsonl, then loc_eval.json (written last: the run is finished)."""
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
    record_finished(files.summary, ident or {}, summary)
