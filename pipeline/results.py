"""What every stage returns: its output paths and headline numbers, as pydantic models.

Each ``run_<stage>`` returns one of these; the flows, ``vgg demo`` and the CLI read paths from
them and never rebuild them. The declared fields are the stage's contract (paths first, then the
numbers a caller acts on); the rest of the stage's report (per-class values, table rows, the
resolved config, ...) rides along as extra fields, so ``model_dump()`` is exactly the JSON file
the stage writes (``eval.json``, ``transfer.json``, ``train.json``, ...). ``result["key"]`` reads a
field like a mapping (for the reports' many keys); new code uses attributes.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "StageResult", "ShardResult", "StatsResult", "SplitCheck", "VerifyResult", "TrainResult", "EvaluateOutputs",
    "EvaluateResult", "ExtractResult", "TransferResult", "LocaliseTrainResult", "LocaliseEvalOutputs",
    "LocaliseEvalResult", "ModelsResult", "PaperResult", "TRAIN_RESULT",
]

#: the file a training run's result is written to (read by the train flow, which runs torchrun)
TRAIN_RESULT = "train.json"


class StageResult(BaseModel):
    """Base of the stage results: declared fields typed, the rest of the report kept as extra fields."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    def __getitem__(self, key: str) -> Any:
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and (key in type(self).model_fields or key in (self.model_extra or {}))

    def get(self, key: str, default: Any = None) -> Any:
        """A field's value, or ``default`` when the result has no such field."""
        return self[key] if key in self else default

    @abc.abstractmethod
    def summary(self) -> str:
        """What the stage did, for people: the CLI prints it (``--json`` prints the result itself)."""


# ---------------------------------------------------------------- shard, stats
class ShardResult(StageResult):
    """What ``run_shard`` did: the shard folder, its manifest and the sample counts."""

    out: Path = Field(description="the shard folder")
    manifest: dict[str, Any] = Field(description="the manifest written (splits, shards, fingerprint, skipped)")
    nothing_to_do: bool = False
    resumed: bool = False
    written: int = 0
    skipped: int = 0
    found: int = 0
    empty_classes: dict[str, list[str]] = Field(default_factory=dict)
    detected: str = ""
    part: str | None = Field(None, description="'i/n' for a part written with --part")

    @property
    def manifest_path(self) -> Path:
        """``manifest.json`` of the shard folder."""
        from pipeline.shards.reader import MANIFEST

        return self.out / MANIFEST

    def summary(self) -> str:
        """One-paragraph human summary."""
        from pipeline.shards.reader import SKIPPED

        head = f"part {self.part}: {self.out}" if self.part else str(self.out)
        if self.nothing_to_do:
            return (f"{head}: shards are complete and up to date (fingerprint {self.manifest['fingerprint']}); "
                    "nothing to do")
        lines = [f"{head}: {self.written} samples written, {self.skipped} skipped, {self.found} found"
                 f" ({'resumed' if self.resumed else 'fresh run'}; source {self.detected})"]
        for name, sp in self.manifest["splits"].items():
            lines.append(f"  {name}: {sp['count']} samples in {len(sp['shards'])} shards")
        for reason, n in self.manifest["skipped"]["by_reason"].items():
            lines.append(f"  skipped {n}: {reason} (see {SKIPPED})")
        for split, names in self.empty_classes.items():
            lines.append(f"  warning: {split}: {len(names)} classes without images: {', '.join(names[:20])}")
        return "\n".join(lines)


class StatsResult(StageResult):
    """The RGB statistics ``run_stats`` stored in the manifest (extra: ``cov``, ``eigval``, ``eigvec``, ...)."""

    shards: str = Field(description="the shard folder")
    manifest: str = Field(description="the manifest.json the statistics were written to")
    mean: list[float] = Field(description="mean RGB (0-255)")
    images: int
    pixels: int
    split: str

    def summary(self) -> str:
        """Mean RGB and the eigen-decomposition of the RGB covariance, for people."""
        def fmt(values: list[float], digits: int) -> str:
            return "[" + ", ".join(f"{v:.{digits}f}" for v in values) + "]"

        lines = [f"{self.shards}: RGB statistics of split {self.split} over {self.images} images "
                 f"({self.pixels} pixels{', sampled' if self.get('sampled') else ''}), stored in {self.manifest}",
                 f"  mean RGB: {fmt(self.mean, 3)}", f"  eigval: {fmt(self.get('eigval') or [], 3)}",
                 "  eigvec (columns):"]
        rows = zip("RGB", self.get("eigvec") or [], strict=False)
        return "\n".join(lines + [f"    {c} {fmt(row, 4)}" for c, row in rows])


class SplitCheck(BaseModel):
    """What ``run_verify`` checked in one split."""

    shards: int = 0
    samples: int = 0
    bytes: int = 0
    bad_shards: list[str] = Field(default_factory=list)


class VerifyResult(StageResult):
    """What ``run_verify`` checked: per split counts and every problem found (one line each)."""

    shards: str
    hashed: bool
    splits: dict[str, SplitCheck]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        """A table of the splits checked, then whether they match the manifest."""
        rows = [f"| {n} | {sp.shards} | {sp.samples} | {sp.bytes / 1e6:.1f} | {len(sp.bad_shards)} |"
                for n, sp in self.splits.items()]
        what = "sizes, counts, sha256, images" if self.hashed else "sizes and counts"
        return "\n".join(["| split | shards | samples | MB | damaged |", "|---|---:|---:|---:|---:|", *rows,
                          f"{self.shards}: {'ok' if self.ok else f'{len(self.problems)} damaged shards'}, "
                          f"{sum(sp.samples for sp in self.splits.values())} samples in "
                          f"{sum(sp.shards for sp in self.splits.values())} shards ({what} match the manifest)"])


# ---------------------------------------------------------------- train
class TrainResult(StageResult):
    """A training run: its files and how it ended."""

    out: str
    last: str = Field(description="checkpoints/last.pt (resume point)")
    best: str | None = Field(description="checkpoints/best.pt (best val top-1), None before a validation")
    metrics: str = Field(description="metrics.jsonl")
    config: str = Field(description="config.yaml (the resolved config)")
    result_json: str = Field(description="train.json: this result")
    best_top1: float | None = None
    best_epoch: int | None = None
    final: dict[str, Any] | None = Field(None, description="last validation metrics")
    epochs: int
    steps: int
    stop: str | None = Field(None, description="why training stopped")
    wall_s: float
    images_per_s: float | None = None

    def summary(self) -> str:
        """How the run ended: epochs and steps, why it stopped, the best and last validation, the files."""
        def pct(x: float | None) -> str:
            return "n/a" if x is None else f"{100 * x:.2f}%"

        final = self.final or {}
        rate = f", {self.images_per_s:.1f} images/s" if self.images_per_s else ""
        lines = [f"{self.out}: {self.epochs} epochs, {self.steps} SGD steps in {self.wall_s:.0f} s{rate}; "
                 f"stopped: {self.stop or 'not finished'}"]
        if self.best_top1 is not None:
            lines.append(f"  best val top-1 error {pct(1 - self.best_top1)} (epoch {self.best_epoch}); last epoch "
                         f"top-1 error {pct(final.get('top1_err'))}, top-5 error {pct(final.get('top5_err'))}")
        lines += [f"  last: {self.last}", f"  best: {self.best or '-'}", f"  metrics: {self.metrics}"]
        return "\n".join(lines)


# ---------------------------------------------------------------- evaluate
class EvaluateOutputs(BaseModel):
    """Files written by ``run_evaluate``."""

    posteriors: str
    table_md: str
    table_csv: str
    config: str
    eval: str


class EvaluateResult(StageResult):
    """The ``eval.json`` content: errors of the chosen method, table rows, per-net scales."""

    outputs: EvaluateOutputs | None = Field(None, description="written files (None without --out)")
    top1_error: float | None = Field(None, description="fraction; None when no image is labelled")
    top5_error: float | None = None
    n_images: int
    method: str
    rows: list[dict[str, Any]] = Field(description="rows of the paper-format table")

    def summary(self) -> str:
        """The paper-format table (Markdown, Tables 3-6), the chosen method's errors, notes and the files."""
        from pipeline.evaluate.tables import to_markdown

        def pct(x: float | None) -> str:
            return "n/a" if x is None else f"{100 * x:.2f}%"

        lines = [to_markdown(self.rows, f"{self['method_name']} evaluation ({self.n_images} images)"),
                 f"top-1 error {pct(self.top1_error)}, top-5 error {pct(self.top5_error)} on {self.n_images} "
                 f"images; {self['n_failed']} failed to decode"]
        lines += [f"note: {note}" for note in self.get("notes", [])]
        if self.outputs is not None:
            lines.append(f"wrote {self.outputs.eval}")
        return "\n".join(lines)


# ---------------------------------------------------------------- extract
class ExtractResult(StageResult):
    """A feature store (or one part of it) and what this run did to it."""

    path: str = Field(description="the HDF5 store written (a part file for status 'part')")
    status: str = Field(description="written, resumed, exists, part or merged")
    images: int | None = None
    scales: list[int] | None = None
    dims: list[int] | None = None
    described: int = 0
    failed: int = 0
    images_per_s: float | None = None

    def summary(self) -> str:
        if self.status == "exists":
            return (f"{self.path} already holds these features (same checkpoints, data, scales); nothing to do. "
                    f"Read it with FeatureStore({self.path!r}) or `vgg inspect {self.path}`.")
        if self.status == "merged" and self.images is None:
            return f"merged {self['parts']} parts into {self.path}"
        rate = f", {self.images_per_s:.1f} images/s" if self.images_per_s else ""
        what = {"written": "wrote", "resumed": "resumed and finished", "part": "wrote part"}.get(self.status, "wrote")
        return (f"{what} {self.path}: {self.images} images, scales {self.scales}, D={self.dims}, "
                f"{self.described} described in this run, {self.failed} failed{rate}")


# ---------------------------------------------------------------- transfer
class TransferResult(StageResult):
    """The ``transfer.json`` content: the protocol's mean (mAP or mean class recall) and its files."""

    out: str
    table: str = Field(description="table.md: the Table 11 row and per-class values")
    result_json: str = Field(description="transfer.json: this result")
    protocol: str
    metric: str
    mean: float = Field(description="fraction (the table shows percent)")
    std: float | None = Field(None, description="over the splits (None: one test set, VOC)")
    status: str = Field(description="written or exists")

    def summary(self) -> str:
        """The Table 11 row, the per-class values (up to 30 classes) and how the SVMs were chosen."""
        from pipeline.transfer.registry import PROTOCOLS
        from pipeline.transfer.report import per_class_table, table11

        parts = [table11([self])]
        if len(self["per_class"]) <= 30:
            parts.append(per_class_table(self, PROTOCOLS[self.protocol].per_class))
        c, desc = self["chosen_C"], self["descriptor"]
        parts.append(f"chosen C: {c if not isinstance(c, dict) else 'per class'}; solver {self.get('solver')}; "
                     f"{desc['dim']}-D descriptors ({desc['aggregate']}); "
                     f"{'reused' if self.status == 'exists' else 'written'}: {self.out}")
        return "\n".join(parts)


# ---------------------------------------------------------------- localise
class LocaliseTrainResult(StageResult):
    """A localisation training run (``train.json``)."""

    out: str
    last: str
    best: str
    metrics: str
    result_json: str = Field(description="train.json: this result")
    history: list[dict[str, Any]]
    best_epoch: dict[str, Any] | None = None
    stop: str | None = Field(None, description="why training stopped (as in TrainResult)")

    def summary(self) -> str:
        b = self.best_epoch or {}
        err = b.get("val_crop_error")
        return (f"wrote {self.best} ({self['head'].upper()}, fine-tuned {self['fine_tune']}, "
                f"S={self['train_scale']}); best epoch {b.get('epoch')}"
                + (f", val GT-class crop error {100 * err:.1f}%" if err is not None else ""))


class LocaliseEvalOutputs(BaseModel):
    """Files written by ``run_localise_evaluate``."""

    config: str
    table: str
    predictions: str
    summary: str


class LocaliseEvalResult(StageResult):
    """The ``loc_eval.json`` content: localisation error per net (and fusion, baselines)."""

    outputs: LocaliseEvalOutputs | None = Field(None, description="written files (None without out)")
    protocol: str
    rows: list[dict[str, Any]]
    table: str = Field(description="the Table 8 / Table 9 format table (Markdown text)")
    classification_error: float | None = None

    def summary(self) -> str:
        im = self["images"]
        line = f"{im['evaluated']} images evaluated, {im['skipped']} skipped"
        if self.classification_error is not None:
            line += f"; top-{self['top_k']} classification error {100 * self.classification_error:.1f}%"
        wrote = f"\nwrote {self.outputs.summary}" if self.outputs is not None else ""
        return f"{self.table}\n{line}{wrote}"


# ---------------------------------------------------------------- models
class ModelsResult(StageResult):
    """``vgg models``: Table 2's columns and the last conv layer's receptive field (Section 2.3) of every net."""

    nets: list[dict[str, Any]] = Field(description="per net: name, weight_layers, params, gflops, receptive_field, "
                                                   "and the sizes it was built at")

    def summary(self) -> str:
        """The nets as a Markdown table, with the sizes they were built at and Section 2.3's weight argument."""
        from pipeline.models import STACK_NOTE

        n = self.nets[0]
        lines = [f"VGG configurations (Table 1): crop {n['crop']}, width x{n['width']:g}, FC {n['fc_width']}, "
                 f"{n['num_classes']} classes", "",
                 "| config | weight layers | parameters | GFLOPs | receptive field |", "|---|--:|--:|--:|--:|"]
        lines += [f"| {r['name']} | {r['weight_layers']} | {r['params']:,} | {r['gflops']:.2f} "
                  f"| {r['receptive_field']} |" for r in self.nets]
        return "\n".join([*lines, "", "receptive field: pixels seen by one unit of the last conv layer. " + STACK_NOTE])


# ---------------------------------------------------------------- the paper flow
class PaperResult(StageResult):
    """The end-to-end demo: where everything went and the headline numbers."""

    workdir: str
    tables: str = Field(description="tables.md")
    shards: str
    checkpoints: dict[str, str] = Field(description="net name (A, D) -> best checkpoint")
    evaluate: str = Field(description="eval.json")
    feature_stores: list[str]
    transfer: dict[str, str] = Field(description="protocol -> transfer.json")
    localise: dict[str, str] = Field(description="train and protocols -> their result JSON")
    results: str | None = Field(None, description="results.json: every number of the printed tables")
    seconds: float
    top1_error: float | None = None
    caltech_recall: float | None = None
    voc07_map: float | None = None

    def summary(self) -> str:
        """The paper-style tables of the run and where they are."""
        return f"{Path(self.tables).read_text()}\ndemo finished in {self.seconds:.0f} s; tables in {self.tables}"
