"""The evaluate stage's config (paper 3.2, 4.1-4.4): which nets, which data, which protocols and test scales."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline.runtime import RuntimeStageConfig
from pipeline.sources import SourceFormat

__all__ = ["EvaluateConfig"]


class EvaluateConfig(RuntimeStageConfig):
    """Configuration of ``run_evaluate`` (paper 3.2, 4.1-4.4)."""

    checkpoints: list[str] = Field(default_factory=list, description="checkpoints to evaluate (several: fusion)")
    data: str | None = Field(None, description="validation data: a shard folder or a source dataset")
    split: str | None = Field(None, description="split to evaluate (None: the only split, else val, else test)")
    format: SourceFormat = "auto"
    from_posteriors: list[str] = Field(default_factory=list,
                                       description="saved posteriors.npz files (or their folders) to recompute "
                                                   "results from, instead of running nets")
    method: Literal["dense", "multicrop", "both"] = Field(
        "dense", description="dense (fully-convolutional), multicrop (5x5 grid + flips per scale), or both "
                             "(each, and their combination, Table 5)")
    scales: list[int] | Literal["multi", "single"] = Field(
        "multi", description="test scales Q: a list, or from each checkpoint's training scale: multi = "
                             "{S-32,S,S+32} / {Smin,mid,Smax} (Table 4), single = S / mid (Table 3)")
    nets: list[int] | None = Field(None, description="indices of the nets to fuse (default all)")
    names: list[str] | None = Field(None, description="table labels of the nets (default: their config letter)")
    flip: bool = Field(True, description="average with the horizontally flipped image (paper: on)")
    grid: int = Field(5, ge=1, description="multi-crop grid side (paper: 5, i.e. 5x5 crops, x2 flips)")
    batch_size: int = Field(16, ge=1, description="images of one rescaled size per forward pass")
    crop_batch: int = Field(128, ge=1, description="crops per forward pass in multi-crop evaluation")
    max_buffered: int = Field(256, ge=1, description="most rescaled images held while batches fill")
    limit: int | None = Field(None, ge=1, description="evaluate only the first N images of the split")
    distributed: bool = Field(True, description="split the images over torchrun processes when WORLD_SIZE > 1")
    posterior_dtype: Literal["float32", "float16"] = Field("float32", description="storage type of saved posteriors")
    out: str | None = Field(None, description="output folder (None: return results without writing files)")
    progress: bool = Field(True, description="show a progress bar on a terminal")
