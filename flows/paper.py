"""The end-to-end flow ``vgg-paper``: the whole paper pipeline on one dataset, as tasks.

Fashion-MNIST (shipped) is laid out as an ImageFolder -> sharded -> statistics -> net A trained
(paper 3.1) -> net D started from A -> evaluated: dense, multi-crop, their combination and the
fusion of A and D (Tables 3-6) -> multi-scale features of D for a Caltech-style set (digits) and a
VOC-style mosaic set (App. B) -> linear-SVM transfer (mean class recall, VOC 11-point mAP,
Table 11) -> localisation nets on the mosaics (App. A, Tables 8-9). Every step is a stage
function with its own resume and reuse, so a failed run is repaired by running it again. The
tables are printed, written to ``<workdir>/tables.md`` and published as artifacts.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from prefect import flow, get_run_logger, task
from pydantic import Field

from flows.common import publish_markdown, publish_table, stage_task
from flows.stages import launch_training
from pipeline.config import StageConfig, load_config
from pipeline.evaluate.stage import EvaluateConfig, run_evaluate
from pipeline.features.extract import ExtractConfig, run_extract
from pipeline.io import read_json
from pipeline.localise.demo import demo_localisation
from pipeline.results import paper_results, write_results
from pipeline.shards import ShardConfig, StatsConfig, run_shard, run_stats
from pipeline.train.config import TrainConfig
from pipeline.transfer.descriptors import write_pixel_store
from pipeline.transfer.report import table11
from pipeline.transfer.stage import TransferConfig, run_transfer

__all__ = ["PaperConfig", "paper_flow", "run_paper"]


class PaperConfig(StageConfig):
    """The end-to-end demo on the shipped data (defaults: about 5.5 minutes on two quiet CPU cores)."""

    workdir: str = Field("runs/demo", description="every output goes under this folder")
    train_per_class: int = Field(1000, ge=10, description="Fashion-MNIST training images per class")
    val_per_class: int = Field(100, ge=5, description="Fashion-MNIST validation images per class")
    preset_a: str = Field("fmnist-demo-a", description="training preset of net A (a preset name or YAML file)")
    preset_d: str = Field("fmnist-demo-d", description="training preset of net D, started from net A")
    train_sets: list[str] = Field(default_factory=list, description="extra `key=value` settings for both trainings")
    nproc_per_node: int = Field(1, ge=1, description="training processes (torchrun) per node")
    eval_limit: int | None = Field(200, ge=1, description="evaluate only the first N validation images (multi-crop costs 150 forward passes per image and net; None = all)")
    digits_size: int = Field(64, ge=32, description="side of the Caltech-style digit images")
    mosaics: int = Field(600, ge=8, description="VOC-style mosaic images")
    mosaic_canvas: int = Field(112, ge=56, description="side of the mosaics in pixels")
    digits_scales: list[int] = Field([48, 64, 96], description="test scales Q of the digits features (0.75x, 1x, 1.5x "
                                     "the 64-px images; 32-px digits at 32-64 gave 26% recall against 36% here)")
    mosaic_scales: list[int] = Field([32, 48, 64], description="test scales Q of the mosaic features (1x, 1.5x, 2x the crop)")
    loc_per_class: int = Field(150, ge=1, le=420, description="training images per class of the ILSVRC-style "
                               "localisation set (validation: 50 per class, as ILSVRC)")
    localise_epochs: int | None = Field(None, ge=1, description="epochs of localisation training (None: the "
                                        "localise-train-small preset's)")
    bf16: bool | None = Field(None, description="bf16 autocast + channels_last in evaluation, extraction and localisation "
                              "(None: where bf16 is native, i.e. GPUs and AMX / AVX512-BF16 CPUs)")


@task(name="prepare-data")
def prepare(cfg: PaperConfig) -> dict[str, str]:
    """Lay the shipped data out as users' data is laid out (deterministic, reused when present)."""
    from pipeline.shipped.digits_caltech import prepare_digits_caltech
    from pipeline.shipped.fashion_mnist import prepare_fashion_mnist
    from pipeline.shipped.ilsvrc_loc import prepare_ilsvrc_loc
    from pipeline.shipped.voc_mosaics import prepare_voc_mosaics

    w = Path(cfg.workdir) / "data"
    return {  # folders named by their parameters: other settings lay out new folders beside the old ones
        "fmnist": str(prepare_fashion_mnist(w / f"fashion-mnist-{_fm_tag(cfg)}", cfg.train_per_class, cfg.val_per_class)),
        "digits": str(prepare_digits_caltech(w / f"digits-caltech-{cfg.digits_size}px", size=cfg.digits_size)),
        "mosaics": str(prepare_voc_mosaics(w / f"voc-mosaics-{_mosaic_tag(cfg)}", images=cfg.mosaics,
                                           canvas=cfg.mosaic_canvas)),
        "ilsvrc_loc": str(prepare_ilsvrc_loc(w / f"ilsvrc-loc-{cfg.loc_per_class}", train_per_class=cfg.loc_per_class)),
    }


def _fm_tag(cfg: PaperConfig) -> str:
    return f"{cfg.train_per_class}-{cfg.val_per_class}"


def _mosaic_tag(cfg: PaperConfig) -> str:
    return f"{cfg.mosaics}x{cfg.mosaic_canvas}px"


def _train_config(preset: str, shards: str, out: Path, extra: list[str]) -> TrainConfig:
    return load_config(TrainConfig, preset, [f"data.shards={shards}", f"out={out}", *extra])


def run_paper(cfg: PaperConfig) -> dict[str, Any]:
    """The body of the flow (also callable inside any flow)."""
    log = get_run_logger()
    t0 = time.perf_counter()
    if cfg.bf16 is None:
        from pipeline.speed import native_bf16

        cfg = cfg.model_copy(update={"bf16": native_bf16("cuda" if torch.cuda.is_available() else "cpu")})
    w = Path(cfg.workdir).resolve()
    w.mkdir(parents=True, exist_ok=True)
    data = prepare(cfg)
    shards = str(w / "shards" / f"fashion-mnist-{_fm_tag(cfg)}")
    stage_task(run_shard, "shard")(ShardConfig(source=data["fmnist"], out=shards, progress=False))
    stage_task(run_stats, "stats")(StatsConfig(shards=shards, progress=False))

    # ---- Section 3.1: net A from random init, then net D with A's first four convs and three FCs
    runs = w / "train" / f"fashion-mnist-{_fm_tag(cfg)}"
    ckpt_a = runs / "A" / "checkpoints" / "best.pt"
    ckpt_d = runs / "D" / "checkpoints" / "best.pt"
    launch_training.with_options(name="train-A")(_train_config(cfg.preset_a, shards, runs / "A", cfg.train_sets),
                                                 cfg.nproc_per_node)
    launch_training.with_options(name="train-D")(
        _train_config(cfg.preset_d, shards, runs / "D", [f"init.net_a={ckpt_a}", *cfg.train_sets]), cfg.nproc_per_node)

    # ---- Sections 3.2, 4.1-4.4: dense, multi-crop, combination, fusion
    ev = stage_task(run_evaluate, "evaluate")(EvaluateConfig(
        checkpoints=[str(ckpt_a), str(ckpt_d)], data=shards, split="val", method="both", scales="multi",
        out=str(w / "evaluate"), limit=cfg.eval_limit, bf16=cfg.bf16, channels_last=cfg.bf16, progress=False))
    publish_table(ev["rows"], "evaluate-table", "Tables 3-6: top-1 / top-5 val. error (%)")

    # ---- Appendix B: features of D, linear SVMs
    ext = dict(checkpoints=[str(ckpt_d)], aggregate="stack",
               precision="bf16" if cfg.bf16 else "fp32", channels_last=cfg.bf16)
    q = lambda scales: "q" + "-".join(map(str, scales))  # noqa: E731 - new scales, new store (never a silent mix)
    digits_h5 = w / "features" / f"digits-{cfg.digits_size}px-{q(cfg.digits_scales)}.h5"
    stage_task(run_extract, "extract-digits")(ExtractConfig(data=data["digits"], out=str(digits_h5), scales=cfg.digits_scales, **ext))
    voc = {}
    for split in ("trainval", "test"):
        voc[split] = w / "features" / f"mosaics-{_mosaic_tag(cfg)}-{split}-{q(cfg.mosaic_scales)}.h5"
        stage_task(run_extract, f"extract-mosaics-{split}")(ExtractConfig(
            data=data["mosaics"], split=split, out=str(voc[split]), scales=cfg.mosaic_scales, **{**ext, "aggregate": "avg"}))
    caltech = stage_task(run_transfer, "transfer-caltech")(TransferConfig(
        stores=[str(digits_h5)], protocol="caltech101", aggregate="stack", out=str(w / "transfer" / "caltech")))
    vocres = stage_task(run_transfer, "transfer-voc07")(TransferConfig(
        stores=[str(voc["trainval"])], test_stores=[str(voc["test"])], protocol="voc07", aggregate="avg",
        out=str(w / "transfer" / "voc07")))
    # the shallow baseline beside them: raw 32x32 pixels through the same SVMs (vgg pixel-features)
    tags = (f"digits-{cfg.digits_size}px", f"mosaics-{_mosaic_tag(cfg)}-trainval", f"mosaics-{_mosaic_tag(cfg)}-test")
    px = {k: w / "features" / f"pixels-{k}.h5" for k in tags}
    for (k, path), (src, split) in zip(px.items(), ((data["digits"], None), (data["mosaics"], "trainval"),
                                                    (data["mosaics"], "test"))):
        if not path.is_file():
            stage_task(write_pixel_store, f"pixels-{k.split('-')[0]}")(src, path, split=split)
    paths = list(px.values())
    caltech_px = stage_task(run_transfer, "transfer-caltech-pixels")(TransferConfig(
        stores=[str(paths[0])], protocol="caltech101", aggregate="stack", out=str(w / "transfer" / "caltech-pixels")))
    voc_px = stage_task(run_transfer, "transfer-voc07-pixels")(TransferConfig(
        stores=[str(paths[1])], test_stores=[str(paths[2])], protocol="voc07", aggregate="avg",
        out=str(w / "transfer" / "voc07-pixels")))

    # ---- Appendix A: localisation nets on the ILSVRC-style set (Tables 8-9), then every number in results.json
    loc = demo_localisation(data["ilsvrc_loc"], str(ckpt_a), w / "localise" / f"ilsvrc-loc-{cfg.loc_per_class}",
                            epochs=cfg.localise_epochs, bf16=bool(cfg.bf16), task=stage_task)
    trained = {n: read_json(r / "summary.json").get("wall_s") for n, r in (("A", runs / "A"), ("D", runs / "D"))
               if (r / "summary.json").is_file()}
    write_results(w / "results.json", paper_results(ev, caltech, caltech_px, vocres, voc_px, loc["crop"], loc["dense"],
                                                    {**trained, **loc["training_seconds"]}, time.perf_counter() - t0))
    took = lambda d: "Training time: " + ", ".join(f"{k} {v:.0f} s" for k, v in d.items() if v) + ".\n"  # noqa: E731

    tables = [
        "## Classification (Tables 3-6): Fashion-MNIST validation set\n\n" + (w / "evaluate" / "table.md").read_text()
        + "\n" + took(trained),
        "## Transfer (Table 11): digits (Caltech protocol), VOC-style mosaics (VOC2007 protocol)\n\n"
        + table11([caltech, caltech_px, vocres, voc_px]) + "\n"
        + (w / "transfer" / "caltech" / "table.md").read_text() + "\n" + (w / "transfer" / "voc07" / "table.md").read_text(),
        "## Localisation (Tables 8-9): ILSVRC-style set, validation split\n\n" + loc["crop"]["table"] + "\n"
        + loc["dense"]["table"] + "\n" + took(loc["training_seconds"]),
    ]
    text = f"# VGG paper pipeline on the shipped data ({time.perf_counter() - t0:.0f} s)\n\n" + "\n\n".join(tables) + "\n"
    from pipeline.io import atomic_write_text

    atomic_write_text(w / "tables.md", text)
    publish_markdown(text, "vgg-paper-tables", "all tables of the run")
    summary = (f"Run folder `{w}`\n\n- shards: `{shards}`\n- checkpoints: `{ckpt_a}`, `{ckpt_d}`\n"
               f"- evaluation: `{w / 'evaluate'}`\n- feature stores: `{digits_h5}`, `{voc['trainval']}`, `{voc['test']}`\n"
               f"- transfer: `{w / 'transfer'}`\n- localisation: `{w / 'localise'}`\n- tables: `{w / 'tables.md'}`\n")
    publish_markdown(summary, "vgg-paper-summary", "paths of everything the run wrote")
    log.info("tables written to %s", w / "tables.md")
    return {"workdir": str(w), "tables": str(w / "tables.md"), "results": str(w / "results.json"),
            "seconds": time.perf_counter() - t0,
            "top1_error": ev.get("top1_error"), "caltech_recall": caltech.get("mean"), "voc07_map": vocres.get("mean")}


@flow(name="vgg-paper", description="The whole paper pipeline: shard, stats, train A and D, evaluate, extract, "
      "transfer, localise; tables as artifacts.")
def paper_flow(config: PaperConfig = PaperConfig()) -> dict[str, Any]:
    return run_paper(config)
