"""The configs of the localisation stages (paper Appendix A.1 training, A.1-A.2 testing, Tables 8-9)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from pipeline.localise.merge import MergeConfig
from pipeline.localise.net import Head
from pipeline.runtime import RuntimeStageConfig
from pipeline.sources import SourceFormat

__all__ = ["LocaliseTrainConfig", "LocaliseEvalConfig"]

_DATA = "data with boxes: a shard folder or a source dataset (VOC/ILSVRC XML)"


class LocaliseTrainConfig(RuntimeStageConfig):
    """Configuration of ``run_localise_train`` (paper A.1 training; Table 8's settings)."""

    data: str = Field(..., description=f"training {_DATA}")
    split: str = Field("train", description="training split")
    val_split: str | None = Field(None, description="split of the per-epoch GT-class crop error (None: best = last)")
    format: SourceFormat = "auto"
    classifier: str = Field(..., description="classification checkpoint to start from (its last layer is replaced)")
    head: Head = Field("pcr", description="scr: one box for all classes (4 outputs); pcr: one box per class (4 x C)")
    fine_tune: Literal["all", "fc"] = Field("all", description="all layers, or FC1 and FC2 (the last is always new)")
    scale: int | None = Field(None, ge=32, description="fixed training scale S (default: the classifier's S)")
    epochs: int = Field(10, ge=1, description="passes over the training split")
    batch_size: int = Field(256, ge=1, description="mini-batch size (paper: 256)")
    lr: float = Field(1e-3, gt=0, description="initial learning rate (paper A.1: 1e-3)")
    lr_steps: list[int] = Field(default_factory=list, description="epochs after which the learning rate drops tenfold")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (paper: 0.9)")
    weight_decay: float = Field(5e-4, ge=0, description="L2 weight decay (paper: 5e-4)")
    dropout: float | None = Field(None, ge=0, lt=1, description="dropout after FC1 and FC2 (default: the classifier's)")
    init_std: float = Field(1e-2, gt=0, description="std of the fresh box layer's initial weights (biases 0)")
    flip: bool = Field(True, description="random horizontal flips (boxes flipped along)")
    min_visible: float = Field(0.5, ge=0, le=1, description="least fraction of a target box inside the crop (OverFeat)")
    shuffle_buffer: int = Field(2048, ge=1, description="images held for shuffling the stream (whole split if larger)")
    limit: int | None = Field(None, ge=1, description="use only the first N training images")
    cache_mb: int = Field(512, ge=0, description="keep the decoded images after epoch 1 if they fit in this many MB")
    val_limit: int | None = Field(None, ge=1, description="validate on only the first N images")
    seed: int = Field(0, description="seed of the box layer, shuffling, crops, flips and dropout")
    out: str = Field(..., description="output folder: checkpoints/{last,best}.pt, metrics.jsonl, config.yaml")
    progress: bool = Field(True, description="show progress on a terminal")


class LocaliseEvalConfig(RuntimeStageConfig):
    """Configuration of ``run_localise_evaluate`` (paper A.1 testing protocols, A.2 Tables 8-9)."""

    checkpoints: list[str] = Field(..., min_length=1, description="localisation checkpoints (the nets, in order)")
    classifier: str | None = Field(None, description="classification checkpoint rating the boxes (dense protocol)")
    data: str = Field(..., description=_DATA)
    split: str | None = Field("val", description="split to evaluate (None: the only / val / test split)")
    format: SourceFormat = "auto"
    protocol: Literal["crop", "dense"] = Field("dense", description="crop: central crop, GT class (Table 8); "
                                                                    "dense: merged boxes, top-k classes (Table 9)")
    scales: list[int] | None = Field(None, description="test scales Q of every net (default: its S; crop: the first)")
    net_scales: list[list[int]] | None = Field(None, description="test scales of each net (overrides scales)")
    fusion_nets: list[int] | None = Field(None, description="indices of the nets fused in the dense fusion row (all)")
    class_scales: list[int] | None = Field(None, description="scales giving the top-k classes (default: the nets')")
    flip: bool = Field(True, description="the classification protocol averages in the flipped image (paper: on)")
    posteriors: list[str] = Field(default_factory=list, description="saved results giving the top-k classes "
                                                                    "(posteriors.npz of `vgg evaluate`, several fused)")
    posteriors_method: Literal["dense", "multicrop", "both"] = Field(
        "both", description="which saved posteriors give the classes: dense, multicrop or both (their combination)")
    posteriors_nets: list[int] | None = Field(None, description="indices of the saved nets to fuse (default all)")
    blacklist: str | None = Field(None, description="devkit blacklist: images left out of the localisation error")
    centre_crop_rows: bool = Field(True, description="dense protocol: also rate each net's central-crop box")
    top_k: int = Field(5, ge=1, description="(label, box) guesses per image (ILSVRC: 5; the error at 1 is shown too)")
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
