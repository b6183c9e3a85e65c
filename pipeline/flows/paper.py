"""The end-to-end flow ``vgg-paper`` (``vgg demo``): the paper's pipeline on the shipped data (README, "What
the demo does"): Sections 3.1-4.4 (Tables 3-6), Appendix B (Tables 11-12), Appendix A (Tables 8-9).

Every step is a stage with its own resume and reuse (:mod:`pipeline.steps`), so a failed run is
repaired by running it again. The tables go to ``<workdir>/tables.md`` and the flow's artifacts;
every number of them is in ``<workdir>/results.json`` (:mod:`pipeline.demo_results`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger, task
from pydantic import Field

from pipeline import steps
from pipeline.config import load_config
from pipeline.demo_results import paper_results, write_results
from pipeline.errors import UserError
from pipeline.evaluate import EvaluateConfig, run_evaluate
from pipeline.flows.common import one_line_failures, publish_markdown, publish_table
from pipeline.flows.routing import Router, Routing
from pipeline.flows.stages import train_on_this_machine
from pipeline.io import atomic_write_text
from pipeline.localise.demo import demo_localisation
from pipeline.results import EvaluateResult, ExtractResult, PaperResult, TrainResult, TransferResult
from pipeline.runtime import RuntimeConfig, RuntimeStageConfig, resolve_bf16, resolve_device
from pipeline.train.config import TrainConfig
from pipeline.transfer import TransferConfig, run_transfer
from pipeline.transfer.report import table11

__all__ = ["PaperConfig", "paper_flow", "run_paper"]


class PaperConfig(RuntimeStageConfig):
    """The end-to-end demo on the shipped data (defaults: about 4.5 minutes on two quiet CPU cores; README)."""

    workdir: str = Field("runs/demo", description="every output goes under this folder")
    train_per_class: int = Field(1000, ge=10, description="Fashion-MNIST training images per class")
    val_per_class: int = Field(100, ge=5, description="Fashion-MNIST validation images per class")
    preset_a: str = Field("fmnist-demo-a", description="training preset of net A (a preset name or YAML file)")
    preset_d: str = Field("fmnist-demo-d", description="training preset of net D, started from net A")
    train_sets: list[str] = Field(default_factory=list, description="extra `key=value` settings for both trainings")
    nproc_per_node: int = Field(1, ge=1, description="training processes (torchrun) per node")
    eval_limit: int | None = Field(200, ge=1, description="evaluate only the first N validation images (multi-crop "
                                   "costs 150 forward passes per image and net; None = all)")
    digits_size: int = Field(64, ge=32, description="side of the Caltech-style digit images")
    digits_height: tuple[float, float] = Field((0.4, 0.6), description="range of the digits' height (fraction of the "
                                               "side); chosen on validation images as data/README.md says")
    mosaics: int = Field(600, ge=8, description="VOC-style mosaic images")
    mosaic_canvas: int = Field(112, ge=56, description="side of the mosaics in pixels")
    action_images: int = Field(100, ge=4, description="VOC 2012 action-style images (1-4 persons each, Table 12)")
    digits_net: Literal["A", "D"] = Field("A", description="net describing the digits (validation choice)")
    digits_scales: list[int] = Field([96], description="test scales Q of the digits features (1.5x the 64-px images: "
                                     "digits of 26-38 px at Q, as the nets' training objects; validation choice)")
    mosaic_net: Literal["A", "D"] = Field("D", description="net describing the mosaics (validation choice)")
    mosaic_scales: list[int] = Field([96], description="test scales Q of the mosaic features (objects of 24-48 px "
                                     "at Q; validation choice)")
    action_scales: list[int] = Field([32, 48, 64], description="test scales Q of the action features (net D)")
    loc_per_class: int = Field(150, ge=1, le=420, description="training images per class of the ILSVRC-style "
                               "localisation set (validation: 50 per class, as ILSVRC)")
    localise_epochs: int | None = Field(None, ge=1, description="epochs of localisation training (None: the "
                                        "localise-train-small preset's)")
    stages: Routing = Field("auto", description="where the stages run: in this flow run's process (in-process), or "
                            "each as a flow run of its deployment on its work pool (deployments: prefect.yaml, "
                            "pools cpu and gpu); auto: deployments when this flow run itself came from a deployment "
                            "on a work pool")
    runtime: RuntimeConfig = Field(default_factory=lambda: RuntimeConfig(bf16="auto"),
                                   description="device and bf16 of evaluation, extraction and localisation (bf16 "
                                               "brings channels_last; auto: where bf16 is native, i.e. GPUs and AMX / "
                                               "AVX512-BF16 CPUs); training takes its presets' runtime")


@task(name="prepare-data")
def prepare_data(cfg: PaperConfig) -> dict[str, str]:
    """Lay the shipped data out as users' data is laid out (deterministic, reused when present)."""
    from pipeline.shipped.digits_caltech import prepare_digits_caltech
    from pipeline.shipped.fashion_mnist import prepare_fashion_mnist
    from pipeline.shipped.ilsvrc_loc import prepare_ilsvrc_loc
    from pipeline.shipped.voc_action import prepare_voc_action
    from pipeline.shipped.voc_mosaics import prepare_voc_mosaics

    w = Path(cfg.workdir) / "data"  # folders named by their parameters: other settings, new folders beside
    trees = {"fmnist": prepare_fashion_mnist(w / f"fashion-mnist-{_fm_tag(cfg)}", cfg.train_per_class,
                                             cfg.val_per_class),
             "digits": prepare_digits_caltech(w / f"digits-caltech-{_digits_tag(cfg)}", size=cfg.digits_size,
                                              height_range=cfg.digits_height),
             "mosaics": prepare_voc_mosaics(w / f"voc-mosaics-{_mosaic_tag(cfg)}", images=cfg.mosaics,
                                            canvas=cfg.mosaic_canvas),
             "ilsvrc_loc": prepare_ilsvrc_loc(w / f"ilsvrc-loc-{cfg.loc_per_class}",
                                              train_per_class=cfg.loc_per_class),
             "action": prepare_voc_action(w / f"voc-action-{cfg.action_images}", images=cfg.action_images)}
    return {name: str(path) for name, path in trees.items()}


def _fm_tag(cfg: PaperConfig) -> str:
    return f"{cfg.train_per_class}-{cfg.val_per_class}"


def _digits_tag(cfg: PaperConfig) -> str:
    return f"{cfg.digits_size}px-h{cfg.digits_height[0]:g}-{cfg.digits_height[1]:g}"


def _mosaic_tag(cfg: PaperConfig) -> str:
    return f"{cfg.mosaics}x{cfg.mosaic_canvas}px"


def _train_config(preset: str, shards: str, out: Path, extra: list[str]) -> TrainConfig:
    return load_config(TrainConfig, preset, [f"data.shards={shards}", f"out={out}", *extra])


def _runtime(cfg: PaperConfig) -> RuntimeConfig:
    """The runtime of evaluation, extraction and localisation: bf16 resolved once, channels_last with it."""
    bf16 = resolve_bf16(cfg.runtime.bf16, resolve_device(cfg.runtime.device))
    return cfg.runtime.model_copy(update={"bf16": bf16, "channels_last": cfg.runtime.channels_last or bf16})


def _classification(cfg: PaperConfig, w: Path, shards: str, rt: RuntimeConfig,
                    route: Router) -> tuple[dict[str, TrainResult], EvaluateResult]:
    """Section 3.1: net A from random init, then net D with A's first four convs and three FCs; Sections
    3.2, 4.1-4.4: dense, multi-crop, combination, fusion."""
    runs = w / "train" / f"fashion-mnist-{_fm_tag(cfg)}"
    nets = {"A": route(train_on_this_machine, "train-A")(
        _train_config(cfg.preset_a, shards, runs / "A", cfg.train_sets), nproc_per_node=cfg.nproc_per_node)}
    nets["D"] = route(train_on_this_machine, "train-D")(
        _train_config(cfg.preset_d, shards, runs / "D", [f"init.net_a={_best(nets['A'])}", *cfg.train_sets]),
        nproc_per_node=cfg.nproc_per_node)
    ev = route(run_evaluate, "evaluate")(EvaluateConfig(
        checkpoints=[_best(nets["A"]), _best(nets["D"])], data=shards, split="val", method="both", scales="multi",
        out=str(w / "evaluate"), limit=cfg.eval_limit, runtime=rt))
    publish_table(ev.rows, "evaluate-table", "Tables 3-6: top-1 / top-5 val. error (%)")
    return nets, ev


def _best(res: TrainResult) -> str:
    if res.best is None:
        raise UserError(f"training in {res.out} kept no best checkpoint (no validation split?)")
    return res.best


def _transfer(cfg: PaperConfig, w: Path, data: dict[str, str], ckpts: dict[str, str], rt: RuntimeConfig,
              route: Router) -> tuple[list[ExtractResult], dict[str, TransferResult]]:
    """Appendix B: features of the nets chosen on validation images, linear SVMs (Tables 11 and 12)."""
    ext = dict(runtime=rt)
    q = lambda scales: "q" + "-".join(map(str, scales))  # noqa: E731 - new scales, new store (never a silent mix)
    f, t = w / "features", w / "transfer"
    digits = steps.extract(route, "digits", f / f"digits-{_digits_tag(cfg)}-{cfg.digits_net}-{q(cfg.digits_scales)}.h5",
                           data=data["digits"], checkpoints=[ckpts[cfg.digits_net]], scales=cfg.digits_scales,
                           aggregate="stack", **ext)
    voc = {split: steps.extract(
        route, f"mosaics-{split}", f / f"mosaics-{_mosaic_tag(cfg)}-{split}-{cfg.mosaic_net}-{q(cfg.mosaic_scales)}.h5",
        data=data["mosaics"], split=split, checkpoints=[ckpts[cfg.mosaic_net]], scales=cfg.mosaic_scales,
        aggregate="avg", **ext) for split in ("trainval", "test")}
    action = steps.extract(route, "action", f / f"action-{cfg.action_images}-trainval-{q(cfg.action_scales)}.h5",
                           data=data["action"], split="trainval", boxes=True, checkpoints=[ckpts["D"]],  # per person
                           scales=cfg.action_scales, aggregate="avg", **ext)
    px = steps.pixel_stores(route, {f"digits-{_digits_tag(cfg)}": (data["digits"], None),
                                    f"mosaics-{_mosaic_tag(cfg)}-trainval": (data["mosaics"], "trainval"),
                                    f"mosaics-{_mosaic_tag(cfg)}-test": (data["mosaics"], "test")}, f,
                            names=lambda key: key.split("-")[0])
    px_digits, px_train, px_test = px.values()
    results = {
        "caltech101": steps.caltech(route, "transfer-caltech", [digits.path], t / "caltech"),
        "voc07": steps.voc07(route, "transfer-voc07", [voc["trainval"].path], [voc["test"].path], t / "voc07"),
        "voc12-action": route(run_transfer, "transfer-voc12-action")(TransferConfig(
            stores=[action.path], protocol="voc12-action", out=str(t / "voc12-action"))),
        "caltech101-pixels": steps.caltech(route, "transfer-caltech-pixels", [px_digits], t / "caltech-pixels"),
        "voc07-pixels": steps.voc07(route, "transfer-voc07-pixels", [px_train], [px_test], t / "voc07-pixels"),
    }
    return [digits, voc["trainval"], voc["test"], action], results


def _localisation(cfg: PaperConfig, w: Path, data: dict[str, str], ckpt_a: str, rt: RuntimeConfig,
                  route: Router) -> dict[str, Any]:
    """Appendix A: Table 8's nets (SCR/PCR, all layers / FC only) from net A on the ILSVRC-style set, Tables 8-9."""
    return demo_localisation(data["ilsvrc_loc"], ckpt_a, w / "localise" / f"ilsvrc-loc-{cfg.loc_per_class}",
                             epochs=cfg.localise_epochs, bf16=bool(rt.bf16), task=route)


def _took(seconds: dict[str, float | None]) -> str:
    return "Training time: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items() if v) + ".\n"


def run_paper(cfg: PaperConfig) -> PaperResult:
    """The body of the flow (also callable inside any flow)."""
    log = get_run_logger()
    t0 = time.perf_counter()
    rt = _runtime(cfg)
    w = Path(cfg.workdir).resolve()
    w.mkdir(parents=True, exist_ok=True)
    route = Router(cfg.stages)
    log.info("stages run %s", "as flow runs of their deployments" if route.routed else "in this process")
    data = prepare_data(cfg)
    shards = steps.shard_and_stats(route, data["fmnist"], w / "shards" / f"fashion-mnist-{_fm_tag(cfg)}")
    nets, ev = _classification(cfg, w, str(shards.out), rt, route)
    stores, transfer = _transfer(cfg, w, data, {k: _best(v) for k, v in nets.items()}, rt, route)
    caltech, vocres = transfer["caltech101"], transfer["voc07"]
    loc = _localisation(cfg, w, data, _best(nets["A"]), rt, route)
    trained = {name: r.wall_s for name, r in nets.items()}
    write_results(w / "results.json", paper_results(
        ev, caltech, transfer["caltech101-pixels"], vocres, transfer["voc07-pixels"], loc["crop"], loc["dense"],
        {**trained, **loc["training_seconds"]}, time.perf_counter() - t0))
    assert ev.outputs is not None  # evaluate was given an out folder
    tables = [
        "## Classification (Tables 3-6): Fashion-MNIST validation set\n\n" + Path(ev.outputs.table_md).read_text()
        + "\n" + _took(trained),
        "## Transfer (Table 11): digits (Caltech protocol), VOC-style mosaics (VOC2007 protocol)\n\n"
        + table11([caltech, transfer["caltech101-pixels"], vocres, transfer["voc07-pixels"]]) + "\n"
        + Path(caltech.table).read_text() + "\n" + Path(vocres.table).read_text(),
        "## Action classification (Table 12): VOC 2012 action-style persons, image and box stacked, val split\n\n"
        + Path(transfer["voc12-action"].table).read_text(),
        "## Localisation (Tables 8-9): ILSVRC-style set, validation split\n\n" + loc["crop"].table + "\n"
        + loc["dense"].table + "\n" + _took(loc["training_seconds"]),
    ]
    text = (f"# VGG paper pipeline on the shipped data ({time.perf_counter() - t0:.0f} s)\n\n"
            + "\n\n".join(tables) + "\n")
    atomic_write_text(w / "tables.md", text)
    publish_markdown(text, "vgg-paper-tables", "all tables of the run")
    res = PaperResult(
        workdir=str(w), tables=str(w / "tables.md"), shards=str(shards.out),
        checkpoints={name: _best(r) for name, r in nets.items()}, evaluate=ev.outputs.eval,
        feature_stores=[s.path for s in stores],
        transfer={name: r.result_json for name, r in transfer.items()},
        localise={**{n: r.result_json for n, r in loc["train"].items()},
                  **{p: loc[p].outputs.summary for p in ("crop", "dense") if loc[p].outputs}},
        results=str(w / "results.json"),
        seconds=time.perf_counter() - t0, top1_error=ev.top1_error, caltech_recall=caltech.mean, voc07_map=vocres.mean)
    publish_markdown(_summary(res), "vgg-paper-summary", "paths of everything the run wrote")
    log.info("tables written to %s", res.tables)
    return res


def _summary(res: PaperResult) -> str:
    return (f"Run folder `{res.workdir}`\n\n- shards: `{res.shards}`\n"
            f"- checkpoints: {', '.join(f'`{p}`' for p in res.checkpoints.values())}\n"
            f"- evaluation: `{res.evaluate}`\n- feature stores: {', '.join(f'`{p}`' for p in res.feature_stores)}\n"
            f"- transfer: {', '.join(f'`{p}`' for p in res.transfer.values())}\n"
            f"- localisation: {', '.join(f'`{p}`' for p in res.localise.values())}\n- tables: `{res.tables}`\n")


@flow(name="vgg-paper", description="The whole paper pipeline: shard, stats, train A and D, evaluate, extract, "
      "transfer, localise; tables as artifacts.")
def paper_flow(config: PaperConfig = PaperConfig()) -> PaperResult:  # noqa: B008 - the UI shows the defaults as a form
    return one_line_failures(run_paper)(config)  # a failed stage: the run fails with its one line, no traceback
