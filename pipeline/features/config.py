"""The configuration of ``vgg extract`` (paper Appendix B: test scales, flips, region crops, storage)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from pipeline.errors import UserError
from pipeline.runtime import RuntimeStageConfig
from pipeline.sources import SourceFormat

__all__ = ["ExtractConfig"]


class ExtractConfig(RuntimeStageConfig):
    """Configuration of ``vgg extract`` (paper Appendix B)."""

    checkpoints: list[str] = Field(default_factory=list, max_length=2, description=(
        "one checkpoint, or two whose descriptors are stacked (late fusion: net0, net1)"))
    data: str | None = Field(None, description="shard folder or source dataset (ImageFolder, VOC, Caltech, "
                                               "ILSVRC, manifest)")
    split: str | None = Field(None, description="split to describe (default: the only split, else val, else test)")
    format: SourceFormat = "auto"
    out: str = Field("features.h5", description="feature store to write (HDF5)")
    scales: list[int] | Literal["paper", "voc"] = Field(
        "paper", description="test scales Q (smallest side): a list, or paper = 256,384,512, voc = 256,...,768")
    relative: bool = Field(False, description="multiply the scales by crop/256 (a crop-32 net: paper -> 32,48,64)")
    flip: bool = Field(True, description="average each descriptor with the horizontally flipped image's")
    boxes: bool = Field(False, description="also describe the box crops (region descriptors, Table 12)")
    aggregate: Literal["avg", "stack"] = Field("avg", description="readers' default aggregation over scales")
    l2: Literal["aggregate", "net", "scale", "both", "none"] = Field(
        "aggregate", description="readers' default L2 placement (aggregate = on the final descriptor, the paper)")
    dtype: Literal["float32", "float16"] = Field("float32", description="storage type of the descriptors")
    batch_size: int = Field(32, ge=1, description="images per batch (one done-mask flush per batch)")
    max_pixels: int = Field(1 << 22, ge=1, description="input pixels (images and flips) per forward pass")
    prefetch: int = Field(2, ge=1, description="batches decoded and rescaled ahead by the reader thread")
    overwrite: bool = Field(False, description="replace a store built from other inputs")
    part: str | None = Field(None, description="'i/n': describe only part i of n (fan-out without torchrun)")
    merge: bool = Field(False, description="combine the finished parts of --out instead of extracting")
    progress: bool = Field(True, description="progress bar (images/s) on a terminal, a progress artifact in a flow")

    @field_validator("part")
    @classmethod
    def _part_form(cls, v: str | None) -> str | None:
        from pipeline.shards.config import parse_part  # the one reader of part specs

        if v is not None:
            try:
                parse_part(v)
            except UserError as e:
                raise ValueError(str(e)) from None
        return v
