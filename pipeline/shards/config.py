"""Configuration of the shard, stats and verify stages (paper 3.1 "Training image size": S_max = 512)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from pipeline.config import StageConfig
from pipeline.errors import UserError
from pipeline.images import DEFAULT_MAX_PIXELS
from pipeline.sources import SourceFormat

__all__ = ["ShardConfig", "StatsConfig", "VerifyConfig", "parse_part"]


def parse_part(spec: str) -> tuple[int, int]:
    """A part spec ``"i/n"`` as ``(i, n)`` with ``0 <= i < n`` (:mod:`pipeline.shards.parts`); another form is a
    UserError."""
    try:
        i, n = (int(x) for x in str(spec).split("/"))
    except ValueError:
        raise UserError(f"part must look like 'i/n' (e.g. 0/4), got {spec!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise UserError(f"part {spec!r}: need 0 <= i < n")
    return i, n


class ShardConfig(StageConfig):
    """Turn an image collection into WebDataset shards (``{split}-{000000}.tar``)."""

    source: str = Field(description="dataset folder (ImageFolder, ILSVRC, VOC, Caltech) or a CSV/JSONL manifest file")
    out: str = Field(description="output folder for the shards, manifest.json and skipped.jsonl")
    format: SourceFormat = "auto"
    splits: list[str] | None = Field(None, description="source splits to write (default: all); 'src:dest' writes "
                                                       "source split src under the name dest, e.g. all:train")
    max_side: int | None = Field(512, ge=8, description="smaller image side is resized to at most this (paper's "
                                                        "S_max = 512); never upscaled; null keeps the size")
    quality: int = Field(90, ge=1, le=100, description="JPEG quality of re-encoded images")
    keep_original: bool = Field(True, description="store the original bytes when they already are an RGB JPEG "
                                                  "within max_side")
    draft: bool = Field(True, description="JPEG draft mode: let libjpeg downscale in the DCT domain when the target "
                                          "is at most half the source size")
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1, description="images with more pixels are skipped "
                                                                  "(decompression bombs)")
    shard_count: int = Field(1000, ge=1, description="at most this many samples per shard")
    shard_bytes: int = Field(1 << 30, ge=1 << 16, description="at most about this many bytes per shard (a single "
                                                              "larger sample gets a shard of its own)")
    shuffle: bool = Field(True, description="seeded shuffle of the sample order across shards, so every shard "
                                            "holds a mix of classes")
    seed: int = Field(0, description="seed of the shuffle")
    workers: int = Field(0, ge=0, description="worker processes (0: all cores; 1: in this process)")
    progress: bool = Field(True, description="progress bar on a terminal, plain log lines otherwise; false: silent")
    overwrite: bool = Field(False, description="replace shards written from another source or config")
    source_options: dict[str, Any] = Field(default_factory=dict, description="extra options for the reader (e.g. "
                                                                              "devkit path for ILSVRC val)")
    part: str | None = Field(None, description="'i/n': write only part i of n (a contiguous block of every split's "
                                               "shuffled order) into OUT/.parts/i-of-n, for fan-out over machines; "
                                               "then run once with --merge")
    merge: bool = Field(False, description="combine the finished parts in OUT/.parts into the shard folder "
                                           "(manifest.json last)")

    @field_validator("part")
    @classmethod
    def _part_form(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                parse_part(v)
            except UserError as e:
                raise ValueError(str(e)) from None
        return v

    @model_validator(mode="after")
    def _part_or_merge(self) -> ShardConfig:
        if self.part is not None and self.merge:
            raise ValueError("part and merge exclude each other: write the parts first, then merge once")
        return self


class StatsConfig(StageConfig):
    """Mean RGB and RGB covariance (with its eigen-decomposition) over the training shards."""

    shards: str = Field(description="shard folder (with manifest.json)")
    split: str = Field("train", description="split to compute the statistics on")
    images: int | None = Field(None, ge=1, description="seeded subsample of this many images (default: all images)")
    seed: int = Field(0, description="seed of the subsample")
    workers: int = Field(0, ge=0, description="worker processes (0: all cores; 1: in this process)")
    progress: bool = Field(True, description="progress bar on a terminal, plain log lines otherwise; false: silent")


class VerifyConfig(StageConfig):
    """Check a shard folder against its manifest: each shard's size and sample count (``hash``: sha256, images)."""

    shards: str = Field(description="shard folder (with manifest.json)")
    hash: bool = Field(False, description="also check every shard's sha256 and that every image decodes "
                                          "(reads all bytes; slow)")
    splits: list[str] | None = Field(None, description="splits to check (default: all)")
    workers: int = Field(0, ge=0, description="worker processes (0: all cores; 1: in this process)")
    progress: bool = Field(True, description="progress bar on a terminal, summary table on stderr; false: silent")
