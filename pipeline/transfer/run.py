"""``run_transfer``: the transfer stage of paper Appendix B (Tables 11 and 12), top to bottom: descriptors,
the registry's protocol, its files, ``transfer.json`` last (outputs and reuse: docs/transfer.md)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pipeline
from pipeline.config import save_config
from pipeline.errors import UserError
from pipeline.io import atomic_write_text, fingerprint
from pipeline.results import TransferResult
from pipeline.reuse import JsonRecord, config_fields, identity, input_digests, record_finished
from pipeline.transfer.config import TransferConfig
from pipeline.transfer.descriptors import Descriptors, join_test_rows, load_descriptors
from pipeline.transfer.registry import PROTOCOLS, TransferProtocol
from pipeline.transfer.report import method_name, per_class_table, table11

__all__ = ["TransferContext", "run_transfer"]


@dataclass
class TransferContext:
    """What a protocol's code reads: the config, its registry entry, the descriptors, where to write."""

    cfg: TransferConfig
    protocol: TransferProtocol
    d: Descriptors
    test_start: int | None  # the first row of the test stores' images; None: no test stores
    out: Path


def _identity(cfg: TransferConfig) -> dict[str, Any]:
    """What the result depends on (:mod:`pipeline.reuse`): the config and the sha256 of every input file."""
    files = [*cfg.stores, *cfg.test_stores, *([cfg.splits_file] if cfg.splits_file else [])]
    for p in files:
        if not Path(p).is_file():
            raise UserError(f"{'feature store' if p != cfg.splits_file else 'splits file'} not found: {p}")
    return identity(format="vgg-transfer/1", config=config_fields(cfg), inputs=input_digests(files),
                    pipeline_version=pipeline.__version__)


def _descriptors(cfg: TransferConfig, aggregate: str, regions: bool) -> tuple[Descriptors, int | None]:
    """The training stores' descriptors, then the test stores' (from the returned row; None without)."""
    d = load_descriptors(cfg.stores, aggregate, cfg.scales, cfg.l2, regions)
    if not cfg.test_stores:
        return d, None
    if len(cfg.test_stores) != len(cfg.stores):
        raise UserError(f"{len(cfg.test_stores)} test store(s) for {len(cfg.stores)} training store(s): "
                        "give one per net")
    return join_test_rows(d, load_descriptors(cfg.test_stores, aggregate, cfg.scales, cfg.l2, regions,
                                              require_labels=False))


def run_transfer(cfg: TransferConfig) -> TransferResult:
    """Run a transfer protocol on feature stores, write its files; the ``transfer.json`` content (``mean``,
    ``std`` as fractions). UserError for stores without labels, of different images, too few images, ..."""
    t0 = time.perf_counter()
    protocol = PROTOCOLS[cfg.protocol]
    out = Path(cfg.out) if cfg.out else Path(cfg.stores[0]).resolve().parent / f"transfer-{cfg.protocol}"
    ident = _identity(cfg)
    record = JsonRecord(out / "transfer.json", "a transfer result")
    files = {"table": str(out / "table.md"), "result_json": str(record.path)}
    old = record.saved(ident)
    if old is not None:
        return TransferResult(**{**old, "status": "exists", **files})

    aggregate = cfg.aggregate or protocol.aggregate
    regions = cfg.regions or protocol.regions
    d, test_start = _descriptors(cfg, aggregate, regions)
    out.mkdir(parents=True, exist_ok=True)
    body = protocol.evaluate(TransferContext(cfg, protocol, d, test_start, out))

    result = {
        "protocol": cfg.protocol, "metric": protocol.metric, "mean": body.pop("mean"), "std": body.pop("std"),
        "per_class": body.pop("per_class"), "chosen_C": body.pop("chosen_C"),
        "method": cfg.method or method_name(d.stores), "column": protocol.column,
        **body,
        "descriptor": {"aggregate": aggregate, "scales": cfg.scales, "l2": cfg.l2, "regions": regions,
                       "dim": int(d.X.shape[1]), "images": int(len(d.ids)), "failed_images": len(d.failed)},
        "c_grid": sorted(cfg.c_grid), "stores": d.stores,
        "test_stores": [str(p) for p in cfg.test_stores], "config": cfg.model_dump(mode="json"),
        "fingerprint": fingerprint([ident]), "pipeline_version": pipeline.__version__,
        "out": str(out), **files, "seconds": round(time.perf_counter() - t0, 3), "status": "written",
    }
    save_config(cfg, out / "config.yaml")
    atomic_write_text(out / "table.md", table11([result]) + "\n" + per_class_table(result, protocol.per_class))
    record_finished(record.path, ident, result)  # last: its presence means the result is finished
    return TransferResult(**result, identity=ident)
