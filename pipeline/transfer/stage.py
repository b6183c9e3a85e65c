"""The transfer stage (paper Appendix B, Table 11): linear SVMs on stored deep descriptors.

``run_transfer(TransferConfig)`` reads one or more feature stores (several = late fusion), builds
the image descriptors (average or stack over scales, L2-normalised), runs a protocol and writes, in
``out``:

* ``transfer.json``: protocol, metric, mean, std (over splits; ``null`` for VOC's single test set),
  per split (value, chosen C, validation score of every C), per class, chosen C, the stores,
  the descriptor settings and the resolved config;
* ``table.md``: the result as a row of Table 11, then the per-class values;
* ``decisions/``: per-image decision values, so anyone can recompute the metric: Caltech and
  generic ``split<k>.csv`` (id, label, predicted, one column per class); VOC ``test.csv`` (id,
  labels, scores) and the devkit's ``comp1_cls_test_<class>.txt`` submission files;
* ``splits.json`` (Caltech, generic): the splits as ids, reloadable with ``splits_file``;
* ``config.yaml``: the resolved config.

Which images are train / val / test for VOC: the devkit's ``ImageSets/Main`` lists, from
``voc_sets`` or else from the dataset path recorded in the store's provenance; test images may sit
in the same store (one store of every image) or in ``test_stores`` (one store per split, as
``vgg extract --split`` writes them). Without the lists, C is chosen on a seeded ``val_fraction``
of the training store. A run with the same config and the same stores (their sha256; the identity
``transfer.json`` records, :mod:`pipeline.reuse`) returns the saved result; any other run replaces it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

import pipeline
from pipeline.config import StageConfig, save_config
from pipeline.errors import UserError
from pipeline.io import atomic_write_text, fingerprint
from pipeline.results import TransferResult
from pipeline.reuse import config_fields, identity, input_digests, record_finished, saved_result
from pipeline.runtime import Progress
from pipeline.transfer.descriptors import Descriptors, load_descriptors
from pipeline.transfer.protocols import recall_protocol, voc_protocol
from pipeline.transfer.report import COLUMN, method_name, per_class_table, table11, write_csv, write_voc_results
from pipeline.transfer.splits import (
    PROTOCOL_COUNTS,
    find_voc_sets,
    load_splits,
    make_splits,
    read_voc_class_labels,
    read_voc_sets,
    save_splits,
)

__all__ = ["TransferConfig", "run_transfer", "PROTOCOLS", "DEFAULT_C_GRID"]

PROTOCOLS = ("voc07", "voc12", "caltech101", "caltech256", "generic", "voc12-action")
DEFAULT_C_GRID = [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0]
METRIC = {"voc07": "mAP (VOC2007 11-point AP)", "voc12": "mAP (VOC2010+ AP, area)",
          "caltech101": "mean class recall", "caltech256": "mean class recall", "generic": "mean class recall",
          "voc12-action": "mAP over persons (VOC2010+ AP, area)"}


class TransferConfig(StageConfig):
    """Configuration of ``vgg transfer`` (paper Appendix B)."""

    stores: list[str] = Field(
        ..., min_length=1, description="feature stores of the same images; several are stacked (late fusion)"
    )
    protocol: Literal["voc07", "voc12", "caltech101", "caltech256", "generic", "voc12-action"] = Field(
        ..., description="voc07 / voc12 (mAP, 11-point / area AP), caltech101 / caltech256 (30/50, 60/rest per class), "
                         "generic, voc12-action (Table 12: persons, image and box stacked)")
    test_stores: list[str] = Field(
        [], description="stores of the test images (same nets, same order): VOC test split, or a generic test set"
    )
    out: str | None = Field(None, description="output folder (default: transfer-<protocol> beside the first store)")
    aggregate: Literal["avg", "stack"] | None = Field(
        None,
        description="over scales: avg or stack (default: avg for VOC, stack for Caltech and generic, as the paper)",
    )
    scales: list[int] | None = Field(None, description="stored scales to use (default: all)")
    l2: Literal["aggregate", "both", "net", "scale", "none"] = Field(
        "aggregate", description="where to L2-normalise (aggregate: the final descriptor, the paper's choice)")
    regions: bool = Field(
        False, description="stack the box-crop descriptors with the whole-image ones (Table 12 setting)"
    )
    c_grid: list[float] = Field(
        DEFAULT_C_GRID, min_length=1, description="SVM C values to choose from on the validation images"
    )
    c_per_class: bool = Field(False, description="VOC: choose C per class (default: one C by validation mAP)")
    solver: Literal["auto", "newton", "liblinear"] = Field(
        "auto",
        description="newton (batched Newton-CG in torch, all classes at once), liblinear (sklearn LinearSVC), "
        "auto (newton)",
    )
    n_splits: int = Field(3, ge=1, description="Caltech / generic: number of random splits")
    seed: int = Field(0, description="seed of the random splits and of the VOC validation hold-out")
    train_per_class: int | None = Field(
        None, ge=1, description="training images per class (default: the protocol's: 30 / 60)"
    )
    test_per_class: int | None = Field(
        None, ge=1, description="test images per class at most (default: the protocol's: 50 / all the rest)"
    )
    val_fraction: float = Field(
        0.2, ge=0.0, lt=1.0, description="share of the training images that chooses C (paper: 20%)"
    )
    splits_file: str | None = Field(None, description="reuse splits saved by an earlier run (splits.json)")
    voc_sets: str | None = Field(
        None, description="VOC ImageSets/Main folder (or VOCdevkit, VOC20xx); default: from the store's dataset path"
    )
    voc_test_split: str = Field(
        "test", description="VOC split scored (test; val for VOC2012, whose test labels are not public)"
    )
    method: str | None = Field(None, description="row name in the results table (default: from the stores' nets)")
    progress: bool = Field(True, description="progress over the splits (a bar on a terminal, an artifact in a flow)")


def _out_dir(cfg: TransferConfig) -> Path:
    return Path(cfg.out) if cfg.out else Path(cfg.stores[0]).resolve().parent / f"transfer-{cfg.protocol}"


def _identity(cfg: TransferConfig) -> dict[str, Any]:
    """What the result depends on (:mod:`pipeline.reuse`): the config and the sha256 of every input file."""
    files = [*cfg.stores, *cfg.test_stores, *([cfg.splits_file] if cfg.splits_file else [])]
    for p in files:
        if not Path(p).is_file():
            raise UserError(f"{'feature store' if p != cfg.splits_file else 'splits file'} not found: {p}")
    return identity(format="vgg-transfer/1", config=config_fields(cfg), inputs=input_digests(files),
                    pipeline_version=pipeline.__version__)


def _concat(a: Descriptors, b: Descriptors) -> tuple[Descriptors, int]:
    """Training-store rows followed by test-store rows; the test rows start at the returned offset."""
    if a.classes != b.classes or a.label_kind != b.label_kind:
        raise UserError("the test stores have other classes or label kinds than the training stores")
    if a.X.shape[1] != b.X.shape[1]:
        raise UserError(f"the test stores give {b.X.shape[1]}-D descriptors, the training stores {a.X.shape[1]}-D "
                        "(same nets, scales and aggregation needed)")
    shared = set(a.ids) & set(b.ids)
    if shared:
        raise UserError(
            f"the test stores share {len(shared)} image(s) with the training stores, e.g. {sorted(shared)[0]!r}"
        )
    return Descriptors(
        ids=np.concatenate([a.ids, b.ids]),
        labels=np.concatenate([a.labels, b.labels]),
        classes=a.classes,
        label_kind=a.label_kind,
        X=np.vstack([a.X, b.X]),
        stores=a.stores,
        failed=a.failed + b.failed,
    ), len(a.ids)


def _rows(ids: list[str], index: dict[str, int]) -> tuple[np.ndarray, list[str]]:
    rows = [index[i] for i in ids if i in index]
    return np.array(rows, dtype=np.int64), [i for i in ids if i not in index]


def _voc_sets_dir(cfg: TransferConfig, d: Descriptors) -> Path | None:
    """The devkit's ImageSets/Main: given, else next to the data the store was extracted from (if there)."""
    if cfg.voc_sets:
        return find_voc_sets(cfg.voc_sets)
    data_path = (d.stores[0].get("data") or {}).get("path")
    if data_path and Path(data_path).exists():
        try:
            return find_voc_sets(data_path)
        except UserError:
            return None
    return None


def _voc_test_images(
    ev: str, d: Descriptors, sets: dict[str, list[str]], sets_dir: Path | None, index: dict[str, int],
    test_start: int | None,
) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    """The scored images in the devkit's order: (ids, their store rows or -1, ground truth, ids without a descriptor).

    Images listed by the devkit but missing from the stores keep their labels from the devkit's class
    files, so they count as misses, as in VOCevalcls.
    """
    if ev in sets:  # the devkit's order (ties, and images without a score, keep it)
        test_ids = list(sets[ev])
        if test_start is not None:
            listed = set(test_ids)
            test_ids += [i for i in d.ids[test_start:] if i not in listed]
    elif test_start is not None:
        test_ids = list(d.ids[test_start:])
    else:
        raise UserError(f"the VOC protocol needs the {ev} images: give their store (test_stores / --test) or the "
                        "ImageSets/Main lists (voc_sets / --voc-sets)")
    test_rows = np.array([index.get(i, -1) for i in test_ids], dtype=np.int64)
    missing_test = [i for i, r in zip(test_ids, test_rows, strict=True) if r < 0]
    test_gt = np.zeros((len(test_ids), len(d.classes)), dtype=np.int8)
    test_gt[test_rows >= 0] = d.labels[test_rows[test_rows >= 0]]
    if missing_test:
        files = read_voc_class_labels(sets_dir, d.classes, ev)
        for j, i in enumerate(test_ids):
            if test_rows[j] < 0:
                if i not in files:
                    raise UserError(f"test image {i!r} has neither a descriptor nor labels in {sets_dir}")
                test_gt[j] = files[i]
    return test_ids, test_rows, test_gt, missing_test


def _voc(cfg: TransferConfig, d: Descriptors, test_start: int | None, out: Path) -> dict[str, Any]:
    if d.label_kind != "multi":
        raise UserError("the VOC protocols need multi-label stores (an N x C matrix of 1/-1/0); "
                        "use caltech101, caltech256 or generic for single-label stores")
    sets_dir = _voc_sets_dir(cfg, d)
    sets = read_voc_sets(sets_dir) if sets_dir else {}
    index = {k: i for i, k in enumerate(d.ids)}
    n_train_pool = test_start if test_start is not None else len(d.ids)
    ev = cfg.voc_test_split
    test_ids, test_rows, test_gt, missing_test = _voc_test_images(ev, d, sets, sets_dir, index, test_start)
    if not (test_gt > 0).any():
        raise UserError(f"no class has a positive image among the {len(test_ids)} {ev} images; "
                        "VOC2012 test labels are not public: score val instead (voc_test_split=val)")
    test_set = set(test_rows[test_rows >= 0].tolist())
    skipped: dict[str, int] = {"test_without_descriptor": len(missing_test)}
    train_name = "trainval" if ev == "test" else "train"
    if sets and train_name in sets:
        train, miss = _rows(sets[train_name], index)
        skipped["train_without_descriptor"] = len(miss)
        train = np.array([r for r in train if r < n_train_pool and r not in test_set], dtype=np.int64)
    else:
        train = np.array([r for r in range(n_train_pool) if r not in test_set], dtype=np.int64)
    if ev == "test" and "train" in sets and "val" in sets:
        fit, _ = _rows(sets["train"], index)
        val, _ = _rows(sets["val"], index)
        fit, val = np.intersect1d(fit, train), np.intersect1d(val, train)
        c_from = "val"
    else:
        rng = np.random.default_rng(cfg.seed)
        perm = train[rng.permutation(len(train))]
        n_val = int(round(len(train) * cfg.val_fraction))
        val, fit = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        c_from = f"seeded {cfg.val_fraction:.0%} hold-out of {train_name}"
    if len(train) == 0 or len(fit) == 0 or (len(val) == 0 and len(cfg.c_grid) > 1):
        raise UserError(
            f"not enough training images (train {len(fit)}, val {len(val)}, final {len(train)}) for the VOC protocol"
        )
    metric = "voc07" if cfg.protocol == "voc07" else "voc10"
    r = voc_protocol(
        d.X, d.labels, fit, val, train, test_rows, test_gt, cfg.c_grid, metric, cfg.solver, cfg.c_per_class
    )
    dec_dir = out / "decisions"
    write_csv(dec_dir / "test.csv", ["id"] + [f"label_{c}" for c in d.classes] + [f"score_{c}" for c in d.classes],
              [[i, *map(int, g), *map(float, s)] for i, g, s in zip(test_ids, test_gt, r.decisions, strict=False)])
    devkit = write_voc_results(dec_dir, test_ids, d.classes, r.decisions)
    per_class = {c: (None if np.isnan(v) else float(v)) for c, v in zip(d.classes, r.per_class, strict=False)}
    return {
        "mean": r.mean,
        "std": None,
        "per_class": per_class,
        "chosen_C": dict(zip(d.classes, r.C, strict=False)) if cfg.c_per_class else r.C[0],
        "splits": [
            {
                "index": 0,
                "value": r.mean,
                "C": r.C[0] if not cfg.c_per_class else None,
                "val": dict(zip(map(str, sorted(cfg.c_grid)), r.val_scores, strict=False)),
                "counts": {"fit": len(fit), "val": len(val), "train": len(train), "test": len(test_ids)},
            }
        ],
        "skipped_classes": [c for c, v in per_class.items() if v is None],
        "c_chosen_on": c_from,
        "voc_sets": str(sets_dir) if sets_dir else None,
        "solver": r.solver,
        "skipped": skipped,
        "outputs": {
            "decisions": "decisions/test.csv",
            "devkit": "decisions/comp1_cls_test_<class>.txt",
            **({"devkit_files": devkit} if any(f"comp1_cls_test_{c}.txt" != v for c, v in devkit.items()) else {}),
        },
    }


def _recall(cfg: TransferConfig, d: Descriptors, test_start: int | None, out: Path) -> dict[str, Any]:
    if d.label_kind != "single" or d.labels.ndim != 1:
        raise UserError(
            f"the {cfg.protocol} protocol needs single-label stores; use voc07 or voc12 for multi-label ones"
        )
    n_train, n_test = PROTOCOL_COUNTS.get(cfg.protocol, (None, None))
    n_train = cfg.train_per_class or n_train
    n_test = cfg.test_per_class or n_test
    pool = d.labels if test_start is None else d.labels[:test_start]
    test_labels = None if test_start is None else d.labels[test_start:]
    if cfg.splits_file:
        splits, meta = load_splits(cfg.splits_file, list(d.ids))
    else:
        splits = make_splits(pool, d.classes, n_train, n_test, cfg.n_splits, cfg.seed, cfg.val_fraction, test_labels)
        meta = {"protocol": cfg.protocol, "train_per_class": n_train, "test_per_class": n_test, "seed": cfg.seed,
                "val_fraction": cfg.val_fraction}
    save_splits(out / "splits.json", splits, list(d.ids), meta)
    with Progress(len(splits), f"transfer {cfg.protocol}", enabled=cfg.progress, unit="splits") as bar:
        res = recall_protocol(d.X, d.labels, len(d.classes), splits, cfg.c_grid, cfg.solver,
                              progress=lambda k: bar.advance(k - bar.done))
    for r in res:
        header = ["id", "label", "predicted"] + [f"score_{c}" for c in d.classes]
        write_csv(out / "decisions" / f"split{r.index}.csv", header,
                  [[d.ids[row], int(d.labels[row]), int(p), *map(float, s)]
                   for row, p, s in zip(r.test_rows, r.predicted, r.decisions, strict=False)])
    values = np.array([r.value for r in res])
    pcs = np.array([r.per_class for r in res])
    with np.errstate(invalid="ignore"):
        mean_pc = [None if np.isnan(pcs[:, c]).all() else float(np.nanmean(pcs[:, c])) for c in range(len(d.classes))]
    return {
        "mean": float(values.mean()),
        "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
        "per_class": dict(zip(d.classes, mean_pc, strict=False)),
        "chosen_C": [r.C for r in res],
        "splits": [
            {
                "index": r.index,
                "value": r.value,
                "C": r.C,
                "val": dict(zip(map(str, sorted(cfg.c_grid)), r.val_scores, strict=False)),
                "per_class": {
                    c: (None if np.isnan(v) else float(v)) for c, v in zip(d.classes, r.per_class, strict=False)
                },
                "counts": {"train": len(s.train), "val": len(s.val), "test": len(s.test)},
            }
            for r, s in zip(res, splits, strict=False)
        ],
        "split_params": meta,
        "solver": res[0].solver,
        "outputs": {"decisions": "decisions/split<k>.csv", "splits": "splits.json"},
    }


def run_transfer(cfg: TransferConfig) -> TransferResult:
    """Run a transfer protocol on feature stores and write its results (see the module docstring).

    Args:
        cfg: the stage config.
    Returns:
        The ``transfer.json`` content (``mean``/``std`` as fractions; the table shows percent).
    Raises:
        UserError: stores without labels, of different images, class counts too small, ...
    """
    t0 = time.perf_counter()
    out = _out_dir(cfg)
    ident = _identity(cfg)
    result_path = out / "transfer.json"
    old = saved_result(result_path, ident, "a transfer result")
    if old is not None:
        return TransferResult(**{**old, "status": "exists", "table": str(out / "table.md"),
                                 "result_json": str(result_path)})
    voc = cfg.protocol in ("voc07", "voc12", "voc12-action")
    aggregate = cfg.aggregate or ("avg" if voc else "stack")
    regions = cfg.regions or cfg.protocol == "voc12-action"  # Table 12: the whole image and the person's box
    d = load_descriptors(cfg.stores, aggregate, cfg.scales, cfg.l2, regions)
    test_start = None
    if cfg.test_stores:
        if len(cfg.test_stores) != len(cfg.stores):
            raise UserError(
                f"{len(cfg.test_stores)} test store(s) for {len(cfg.stores)} training store(s): give one per net"
            )
        d, test_start = _concat(d, load_descriptors(cfg.test_stores, aggregate, cfg.scales, cfg.l2, regions,
                                                        require_labels=False))
    out.mkdir(parents=True, exist_ok=True)
    if cfg.protocol == "voc12-action":
        from pipeline.transfer.action import action_protocol

        body = action_protocol(cfg, d, test_start, out)
    else:
        body = _voc(cfg, d, test_start, out) if voc else _recall(cfg, d, test_start, out)
    result = {
        "protocol": cfg.protocol, "metric": METRIC[cfg.protocol], "mean": body.pop("mean"), "std": body.pop("std"),
        "per_class": body.pop("per_class"), "chosen_C": body.pop("chosen_C"),
        "method": cfg.method or method_name(d.stores), "column": COLUMN[cfg.protocol],
        **body,
        "descriptor": {"aggregate": aggregate, "scales": cfg.scales, "l2": cfg.l2, "regions": regions,
                       "dim": int(d.X.shape[1]), "images": int(len(d.ids)), "failed_images": len(d.failed)},
        "c_grid": sorted(cfg.c_grid), "stores": d.stores,
        "test_stores": [str(p) for p in cfg.test_stores], "config": cfg.model_dump(mode="json"),
        "fingerprint": fingerprint([ident]), "pipeline_version": pipeline.__version__,
        "out": str(out), "table": str(out / "table.md"), "result_json": str(result_path),
        "seconds": round(time.perf_counter() - t0, 3), "status": "written",
    }
    save_config(cfg, out / "config.yaml")
    atomic_write_text(out / "table.md", table11([result]) + "\n" + per_class_table(result))
    record_finished(result_path, ident, result)  # last: its presence means the result is finished
    return TransferResult(**result, identity=ident)
