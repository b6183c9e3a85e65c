"""``run_reproduce``: the paper's experiments (Sections 4.1-4.4, Apps. A-B) run by the project's own stages.

Every step (a trained net and its test evaluation, or one experiment) is done by the stage
functions (shard, stats, train, evaluate, extract, transfer, localise) and recorded in
``<workdir>/records/<id>.json`` when it has finished, with the identity of what it was made from
(its settings and the records it used). A re-run skips every step whose record matches; a killed
run continues where it stopped (training resumes from its last checkpoint, feature stores from
their done rows). A record made with other settings is refused: results of two budgets never mix
in one folder. The report (:mod:`pipeline.reproduce.report`) is written from the records.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import Field

from pipeline import reuse
from pipeline.config import config_from
from pipeline.errors import UserError
from pipeline.evaluate import EvaluateConfig, run_evaluate
from pipeline.io import fingerprint, read_json
from pipeline.locks import exclusive
from pipeline.reproduce.experiments import localisation, transfer
from pipeline.reproduce.plan import EXPERIMENTS, FULL, QUICK, Budget, NetRun, selected, train_settings
from pipeline.results import StageResult
from pipeline.runtime import Progress, RuntimeConfig, RuntimeStageConfig, log, resolve_device
from pipeline.steps import StageCall, direct, shard_and_stats
from pipeline.train import run_train
from pipeline.train.checkpoints import RunPaths
from pipeline.train.config import TrainConfig

__all__ = ["ReproduceConfig", "ReproduceResult", "run_reproduce", "Records"]


class ReproduceConfig(RuntimeStageConfig):
    """Configuration of ``run_reproduce`` (``vgg reproduce``; flow ``paper-reproduction``)."""

    workdir: str | None = Field(None, description="every output goes under this folder; re-use it to resume "
                                                  "(default runs/reproduce, or runs/reproduce-quick with --quick)")
    quick: bool = Field(False, description="the same experiments at a tiny budget (minutes; tests and checks)")
    only: list[str] | None = Field(None, description="run ids (A-fixed, ..., E-jitter) or experiments (multicrop, "
                                                     "fusion, localisation, transfer) to do, with the runs they need; "
                                                     "default all")
    seeds: int = Field(1, ge=1, description="training seeds per selected run: repeats with seeds 1..N-1 (ids "
                                             "<run>-seed<k>) measure the spread over seeds; findings use seed 0")
    budget: Budget | None = Field(None, description="change fields of the budget (of the full run's, or of "
                                                    "--quick's)")
    report_only: bool = Field(False, description="only write the report from the finished steps (runs nothing; "
                                                 "works beside a running reproduction)")
    publish: str | None = Field(None, description="also copy the report to PUBLISH.md and results.json and figures "
                                                  "into PUBLISH/ (e.g. docs/reproduction)")
    progress: bool = Field(True, description="progress over the experiments (a bar on a terminal, an artifact in a "
                                             "flow)")
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig, description="device of every net (bf16 stays off: "
                                                                              "float32 results, as committed)")


class ReproduceResult(StageResult):
    """What ``run_reproduce`` wrote."""

    workdir: str
    report: str = Field(description="report.md")
    results: str = Field(description="results.json")
    figures: list[str]
    findings: dict[str, bool | None] = Field(description="finding id -> reproduced (None: not run)")
    seconds: float

    def summary(self) -> str:
        """The report and where it and its data are."""
        return (f"{Path(self.report).read_text()}\nreport: {self.report}\nresults: {self.results}\n"
                f"figures: {', '.join(self.figures)}")


class Records:
    """``<workdir>/records/<id>.json``: the finished steps, each with the identity it was made from."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def get(self, step: str) -> dict[str, Any] | None:
        path = self.folder / f"{step}.json"
        return read_json(path) if path.is_file() else None

    def step(self, step: str, identity: dict[str, Any], fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The record of ``step``: reused when its identity matches, else made by ``fn()`` and written last.

        The project's one rule for finished outputs (:mod:`pipeline.reuse`): a record exists only once
        the step has finished, and one made with other settings is refused with the fields that differ.
        """
        path = self.folder / f"{step}.json"
        ident = reuse.identity(**identity)
        record = reuse.JsonRecord(path, what=f"step {step} done with other settings",
                                  hint="use another --workdir, or delete that record to redo the step")
        decision = reuse.check_reusable(record, ident)
        if decision == "reuse":
            return read_json(path)
        t0 = time.perf_counter()
        result = fn()
        rec = {"id": step, "seconds": round(time.perf_counter() - t0, 1), **result}
        reuse.record_finished(path, ident, rec)
        return {**rec, "identity": ident}


def _device_name(pref: str) -> str:
    dev = resolve_device(pref)
    if dev.type == "cuda":
        import torch

        return f"cuda: {torch.cuda.get_device_name(dev)}"
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from pipeline.runtime import cpu_count

    return f"cpu: {model or 'unknown'} ({cpu_count()} cores)"


# ---------------------------------------------------------------- data
def _prepare(w: Path, budget: Budget, call: StageCall) -> dict[str, Any]:
    from pipeline.shipped.fashion_mnist import prepare_fashion_mnist_test

    tag = f"{budget.train_per_class}-{budget.val_per_class}-{budget.test_per_class or 'all'}"
    src = call(prepare_fashion_mnist_test, "prepare-fashion-mnist")(
        w / "data" / f"fashion-mnist-{tag}", budget.train_per_class, budget.val_per_class, budget.test_per_class)
    shards = shard_and_stats(call, src, w / "shards" / f"fashion-mnist-{tag}")
    return {"source": str(src), "shards": str(shards.out), "fingerprint": shards.manifest["fingerprint"]}


# ---------------------------------------------------------------- Table 3 runs
def _train_config(run: NetRun, budget: Budget, w: Path, shards: str, init_ckpt: str | None,
                  cfg: ReproduceConfig) -> TrainConfig:
    d = train_settings(run, budget)
    d["data"]["shards"] = shards
    d["out"] = str(w / "runs" / run.id)
    if init_ckpt:
        d["init"]["net_a"] = init_ckpt
    d["runtime"] = {"device": cfg.runtime.device, "bf16": False, "channels_last": True}
    d["progress"] = cfg.progress
    d["resume"] = RunPaths(Path(d["out"])).last.is_file()  # a killed run continues from its last checkpoint
    return config_from(TrainConfig, d, f"run {run.id}")


def _train_and_test(run: NetRun, tc: TrainConfig, shards: str, cfg: ReproduceConfig, device: str,
                    call: StageCall) -> dict[str, Any]:
    """Train one net (paper 3.1) and run it densely over the test split at its multi-scale Q (4.1, 4.2)."""
    tr = call(run_train, f"train-{run.id}")(tc)
    if tr.best is None:
        raise UserError(f"run {run.id}: training kept no best checkpoint")
    t0 = time.perf_counter()
    ev = call(run_evaluate, f"test-{run.id}")(EvaluateConfig(
        checkpoints=[tr.best], data=shards, split="test", method="dense", scales="multi", names=[run.id],
        out=str(Path(tc.out) / "test-dense"), progress=cfg.progress, runtime=cfg.runtime.model_copy(
            update={"bf16": False})))
    assert ev.outputs is not None
    return {"checkpoint": tr.best, "train": tr.result_json, "metrics": tr.metrics, "config": tr.config,
            "posteriors": ev.outputs.posteriors, "epochs": tr.epochs, "steps": tr.steps, "stop": tr.stop,
            "train_seconds": tr.wall_s, "test_seconds": round(time.perf_counter() - t0, 1),
            "val_top1_best": tr.best_top1, "device": device}


def _do_runs(runs: list[NetRun], budget: Budget, w: Path, data: dict[str, Any], cfg: ReproduceConfig,
             book: Records, bar: Progress, device: str, call: StageCall) -> dict[str, dict[str, Any]]:
    done: dict[str, dict[str, Any]] = {}
    for run in runs:
        init = done[run.init_from]["checkpoint"] if run.init_from else None
        identity = {"step": "train+test", "settings": train_settings(run, budget), "data": data["fingerprint"],
                    "init": book.get(run.init_from)["identity_hash"] if run.init_from else None}
        tc = _train_config(run, budget, w, data["shards"], init, cfg)
        h = fingerprint([identity])  # names this run in the identities of the steps built on it
        rec = book.step(run.id, identity, lambda r=run, t=tc, h=h: {
            **_train_and_test(r, t, data["shards"], cfg, device, call), "identity_hash": h})
        done[run.id] = rec
        bar.advance()
        bar.note(f"{run.id} done")
    return done


# ---------------------------------------------------------------- Table 5's multi-crop evaluation
def _multicrop(done: dict[str, dict[str, Any]], budget: Budget, w: Path, data: dict[str, Any],
               cfg: ReproduceConfig, call: StageCall) -> dict[str, Any]:
    out: dict[str, str] = {}
    for rid in EXPERIMENTS["multicrop"]:
        ev = call(run_evaluate, f"multicrop-{rid}")(EvaluateConfig(
            checkpoints=[done[rid]["checkpoint"]], data=data["shards"], split="test", method="multicrop",
            scales="multi", grid=budget.multicrop_grid, names=[rid], out=str(w / "experiments" / "multicrop" / rid),
            progress=cfg.progress, runtime=cfg.runtime.model_copy(update={"bf16": False})))
        assert ev.outputs is not None
        out[rid] = ev.outputs.posteriors
    return {"posteriors": out}


#: the budget fields each experiment's result depends on (its identity)
EXPERIMENT_BUDGET = {"multicrop": ("multicrop_grid",), "fusion": (),
                     "localisation": ("loc_per_class", "localise_epochs"),
                     "transfer": ("digits_size", "mosaics", "transfer_scales", "transfer_single")}


def _experiments(names: list[str], done: dict[str, dict[str, Any]], budget: Budget, w: Path,
                 data: dict[str, Any], cfg: ReproduceConfig, book: Records, bar: Progress,
                 call: StageCall) -> dict[str, dict[str, Any]]:
    made: dict[str, dict[str, Any]] = {}
    for name in names:
        identity = {"step": name, "budget": {k: getattr(budget, k) for k in EXPERIMENT_BUDGET[name]},
                    "runs": {r: done[r]["identity_hash"] for r in EXPERIMENTS[name]}}
        if name == "multicrop":
            fn = lambda: _multicrop(done, budget, w, data, cfg, call)  # noqa: E731
        elif name == "fusion":  # computed from the saved posteriors at report time: nothing to run
            fn = lambda: {"runs": list(EXPERIMENTS["fusion"])}  # noqa: E731
        elif name == "localisation":
            fn = lambda: localisation(done, budget, w, cfg.runtime.device, cfg.progress, call)  # noqa: E731
        else:
            fn = lambda: transfer(done, budget, w, cfg.runtime.device, call)  # noqa: E731
        made[name] = book.step(name, identity, fn)
        bar.advance()
        bar.note(f"{name} done")
    return made


def resolve_budget(cfg: ReproduceConfig) -> Budget:
    """The full or quick budget, with the fields ``cfg.budget`` sets explicitly."""
    base = QUICK if cfg.quick else FULL
    if cfg.budget is None:
        return base
    return base.model_copy(update={k: getattr(cfg.budget, k) for k in cfg.budget.model_fields_set})


def run_reproduce(cfg: ReproduceConfig, call: StageCall = direct) -> ReproduceResult:
    """Run (or continue) the reproduction in ``cfg.workdir`` and write its report, results and figures."""
    from pipeline.reproduce.report import write_report

    t0 = time.perf_counter()
    budget = resolve_budget(cfg)
    w = Path(cfg.workdir or ("runs/reproduce-quick" if cfg.quick else "runs/reproduce")).resolve()
    w.mkdir(parents=True, exist_ok=True)
    runs, names = selected(cfg.only, cfg.seeds)
    book = Records(w / "records")
    device = _device_name(cfg.runtime.device)
    log(f"reproduce: {len(runs)} runs and {len(names)} experiments in {w} ({'quick' if cfg.quick else 'full'} "
        f"budget, {device})", cfg.progress)
    if cfg.report_only:
        data, done, made = {"shards": str(w / "shards")}, {}, {}
    else:
        with exclusive(w / ".lock", f"reproduction {w}"):
            data = _prepare(w, budget, call)
            with Progress(len(runs) + len(names), "reproduce", enabled=cfg.progress, unit="steps") as bar:
                done = _do_runs(runs, budget, w, data, cfg, book, bar, device, call)
                made = _experiments(names, done, budget, w, data, cfg, book, bar, call)
    paths = write_report(w, book, budget, quick=cfg.quick, data=data)
    if cfg.publish:
        from pipeline.reproduce.report import publish

        log(f"published: {', '.join(publish(w, Path(cfg.publish)))}", cfg.progress)
    findings = read_json(paths["results"])["findings"]
    return ReproduceResult(
        workdir=str(w), report=paths["report"], results=paths["results"], figures=paths["figures"],
        findings={f["id"]: f["reproduced"] for f in findings}, seconds=time.perf_counter() - t0,
        runs=sorted(done), experiments=sorted(made))
