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

from pipeline import steps
from pipeline.reproduce.plan import Budget
from pipeline.runtime import RuntimeConfig
from pipeline.steps import StageCall

__all__ = ["localisation", "transfer", "LOC_NET"]

#: the classification run the localisation nets start from (paper: configuration D, fixed S)
LOC_NET = "D-fixed"


def localisation(done: dict[str, dict[str, Any]], budget: Budget, w: Path, device: str, progress: bool,
                 call: StageCall) -> dict[str, Any]:
    """Tables 8 and 9 on the ILSVRC-style set (validation split; 50 images per class)."""
    from pipeline.localise.demo import demo_localisation
    from pipeline.shipped.ilsvrc_loc import prepare_ilsvrc_loc

    data = call(prepare_ilsvrc_loc, "prepare-ilsvrc-loc")(w / "data" / f"ilsvrc-loc-{budget.loc_per_class}",
                                                          train_per_class=budget.loc_per_class)
    res = demo_localisation(str(data), done[LOC_NET]["checkpoint"], w / "experiments" / "localisation",
                            epochs=budget.localise_epochs, task=call)
    out: dict[str, Any] = {"net": LOC_NET, "training_seconds": res["training_seconds"]}
    for proto in ("crop", "dense"):
        r = res[proto]
        out[proto] = {"rows": r.rows, "images": r.get("images", {}).get("localisation"),
                      "summary": r.outputs.summary if r.outputs else None}
    return out


def _stores(done: dict[str, dict[str, Any]], budget: Budget, w: Path, data: dict[str, str], device: str,
            call: StageCall) -> dict[str, str]:
    """Feature stores: digits and mosaics (trainval, test) described by D-jitter and E-jitter, and raw pixels."""
    q = "q" + "-".join(map(str, budget.transfer_scales))
    f = w / "features"
    ext = dict(scales=budget.transfer_scales, progress=False, runtime=RuntimeConfig(device=device))
    stores: dict[str, str] = {}
    for rid in ("D-jitter", "E-jitter"):
        ck = [done[rid]["checkpoint"]]
        stores[f"digits/{rid}"] = steps.extract(call, f"digits-{rid}", f / f"digits-{rid}-{q}.h5", data=data["digits"],
                                                checkpoints=ck, aggregate="stack", **ext).path
        for split in ("trainval", "test"):
            stores[f"mosaics-{split}/{rid}"] = steps.extract(
                call, f"mosaics-{split}-{rid}", f / f"mosaics-{split}-{rid}-{q}.h5", data=data["mosaics"],
                split=split, checkpoints=ck, aggregate="avg", **ext).path
    px = steps.pixel_stores(call, {"digits": (data["digits"], None), "mosaics-trainval": (data["mosaics"], "trainval"),
                                   "mosaics-test": (data["mosaics"], "test")}, f)
    return {**stores, **{f"{key}/pixels": path for key, path in px.items()}}


#: Table 11's rows: (row label, runs whose stores are stacked, single scale?)
ROWS = (("D, single scale", ("D-jitter",), True), ("D", ("D-jitter",), False), ("E", ("E-jitter",), False),
        ("D & E", ("D-jitter", "E-jitter"), False), ("raw pixels", ("pixels",), False))


def transfer(done: dict[str, dict[str, Any]], budget: Budget, w: Path, device: str, call: StageCall) -> dict[str, Any]:
    """Table 11 at small scale: Caltech-101 protocol on digits, VOC-2007 protocol on mosaics."""
    from pipeline.shipped.digits_caltech import prepare_digits_caltech
    from pipeline.shipped.voc_mosaics import prepare_voc_mosaics

    data = {"digits": str(call(prepare_digits_caltech, "prepare-digits")(
                w / "data" / f"digits-caltech-{budget.digits_size}", size=budget.digits_size)),
            "mosaics": str(call(prepare_voc_mosaics, "prepare-mosaics")(
                w / "data" / f"voc-mosaics-{budget.mosaics}", images=budget.mosaics, canvas=112))}
    stores = _stores(done, budget, w, data, device, call)
    rows: list[dict[str, Any]] = []
    for label, members, single in ROWS:
        scales = [budget.transfer_single] if single else None
        tag = "-".join(m.split("-")[0] for m in members) + ("-single" if single else "")
        out, svm = w / "experiments" / "transfer", dict(scales=scales, method=label, progress=False)
        cal = steps.caltech(call, f"transfer-caltech-{tag}", [stores[f"digits/{m}"] for m in members],
                            out / f"caltech-{tag}", **svm)
        voc = steps.voc07(call, f"transfer-voc07-{tag}", [stores[f"mosaics-trainval/{m}"] for m in members],
                          [stores[f"mosaics-test/{m}"] for m in members], out / f"voc07-{tag}", **svm)
        rows.append({"method": label, "scales": scales or budget.transfer_scales,
                     "caltech": cal.mean, "caltech_std": cal.std, "caltech_splits": cal.get("n_splits", 3),
                     "voc07": voc.mean, "caltech_result": cal.result_json, "voc07_result": voc.result_json})
    return {"rows": rows, "data": data}
