"""The reproduction's experiments beyond Table 3: localisation (App. A, Tables 8-9) and transfer (App. B, Table 11).

Localisation: Table 8's three nets (SCR / PCR, FC layers / all layers fine-tuned) built on net D
trained at fixed S, as in the paper, on the ILSVRC-style set; Table 9's dense protocol.

Transfer: descriptors of D and E (jittered S, the paper's Net-D and Net-E) on the Caltech-style
digits (Caltech-101 protocol, scales stacked) and the VOC-2007-style mosaics (11-point mAP, scales
averaged): one net at a single scale, each net over several scales, the two nets' late fusion
(stacked descriptors), and the raw-pixel baseline through the same SVMs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.features.extract import ExtractConfig, run_extract
from pipeline.reproduce.plan import Budget
from pipeline.runtime import RuntimeConfig
from pipeline.transfer.descriptors import write_pixel_store
from pipeline.transfer.stage import TransferConfig, run_transfer

__all__ = ["localisation", "transfer", "LOC_NET"]

#: the classification run the localisation nets start from (paper: configuration D, fixed S)
LOC_NET = "D-fixed"


def localisation(done: dict[str, dict[str, Any]], budget: Budget, w: Path, device: str, progress: bool,
                 task: Any) -> dict[str, Any]:
    """Tables 8 and 9 on the ILSVRC-style set (validation split; 50 images per class)."""
    from pipeline.localise.demo import demo_localisation
    from pipeline.shipped.ilsvrc_loc import prepare_ilsvrc_loc

    data = task(prepare_ilsvrc_loc, "prepare-ilsvrc-loc")(w / "data" / f"ilsvrc-loc-{budget.loc_per_class}",
                                                          train_per_class=budget.loc_per_class)
    res = demo_localisation(str(data), done[LOC_NET]["checkpoint"], w / "experiments" / "localisation",
                            epochs=budget.localise_epochs, task=task)
    out: dict[str, Any] = {"net": LOC_NET, "training_seconds": res["training_seconds"]}
    for proto in ("crop", "dense"):
        r = res[proto]
        out[proto] = {"rows": r.rows, "images": r.get("images", {}).get("localisation"),
                      "summary": r.outputs.summary if r.outputs else None}
    return out


def _extract(task: Any, name: str, data: str, ckpt: str, scales: list[int], out: Path, aggregate: str,
             device: str, split: str | None = None) -> str:
    res = task(run_extract, f"extract-{name}")(ExtractConfig(
        data=data, split=split, checkpoints=[ckpt], scales=scales, aggregate=aggregate, out=str(out),
        progress=False, runtime=RuntimeConfig(device=device)))
    return res.path


def _stores(done: dict[str, dict[str, Any]], budget: Budget, w: Path, data: dict[str, str], device: str,
            task: Any) -> dict[str, str]:
    """Feature stores: digits and mosaics (trainval, test) described by D-jitter and E-jitter, and raw pixels."""
    q = "q" + "-".join(map(str, budget.transfer_scales))
    f = w / "features"
    stores: dict[str, str] = {}
    for rid in ("D-jitter", "E-jitter"):
        ck = done[rid]["checkpoint"]
        stores[f"digits/{rid}"] = _extract(task, f"digits-{rid}", data["digits"], ck, budget.transfer_scales,
                                           f / f"digits-{rid}-{q}.h5", "stack", device)
        for split in ("trainval", "test"):
            stores[f"mosaics-{split}/{rid}"] = _extract(task, f"mosaics-{split}-{rid}", data["mosaics"], ck,
                                                        budget.transfer_scales, f / f"mosaics-{split}-{rid}-{q}.h5",
                                                        "avg", device, split)
    for key, src, split in (("digits", data["digits"], None), ("mosaics-trainval", data["mosaics"], "trainval"),
                            ("mosaics-test", data["mosaics"], "test")):
        px = f / f"pixels-{key}.h5"
        if not px.is_file():
            task(write_pixel_store, f"pixels-{key}")(src, px, split=split)
        stores[f"{key}/pixels"] = str(px)
    return stores


#: Table 11's rows: (row label, runs whose stores are stacked, single scale?)
ROWS = (("D, single scale", ("D-jitter",), True), ("D", ("D-jitter",), False), ("E", ("E-jitter",), False),
        ("D & E", ("D-jitter", "E-jitter"), False), ("raw pixels", ("pixels",), False))


def transfer(done: dict[str, dict[str, Any]], budget: Budget, w: Path, device: str, task: Any) -> dict[str, Any]:
    """Table 11 at small scale: Caltech-101 protocol on digits, VOC-2007 protocol on mosaics."""
    from pipeline.shipped.digits_caltech import prepare_digits_caltech
    from pipeline.shipped.voc_mosaics import prepare_voc_mosaics

    data = {"digits": str(task(prepare_digits_caltech, "prepare-digits")(
                w / "data" / f"digits-caltech-{budget.digits_size}", size=budget.digits_size)),
            "mosaics": str(task(prepare_voc_mosaics, "prepare-mosaics")(
                w / "data" / f"voc-mosaics-{budget.mosaics}", images=budget.mosaics, canvas=112))}
    stores = _stores(done, budget, w, data, device, task)
    rows: list[dict[str, Any]] = []
    for label, members, single in ROWS:
        scales = [budget.transfer_single] if single else None
        tag = "-".join(m.split("-")[0] for m in members) + ("-single" if single else "")
        cal = task(run_transfer, f"transfer-caltech-{tag}")(TransferConfig(
            stores=[stores[f"digits/{m}"] for m in members], protocol="caltech101", aggregate="stack",
            scales=scales, method=label, progress=False, out=str(w / "experiments" / "transfer" / f"caltech-{tag}")))
        voc = task(run_transfer, f"transfer-voc07-{tag}")(TransferConfig(
            stores=[stores[f"mosaics-trainval/{m}"] for m in members],
            test_stores=[stores[f"mosaics-test/{m}"] for m in members], protocol="voc07", aggregate="avg",
            scales=scales, method=label, progress=False, out=str(w / "experiments" / "transfer" / f"voc07-{tag}")))
        rows.append({"method": label, "scales": scales or budget.transfer_scales,
                     "caltech": cal.mean, "caltech_std": cal.std, "caltech_splits": cal.get("n_splits", 3),
                     "voc07": voc.mean, "caltech_result": cal.result_json, "voc07_result": voc.result_json})
    return {"rows": rows, "data": data}
