"""The configuration of ``vgg transfer`` (paper Appendix B): stores, protocol, descriptor and SVM settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline.config import StageConfig
from pipeline.transfer.registry import PROTOCOLS

__all__ = ["TransferConfig", "DEFAULT_C_GRID"]

DEFAULT_C_GRID = [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0]


class TransferConfig(StageConfig):
    """Configuration of ``vgg transfer`` (paper Appendix B)."""

    stores: list[str] = Field(..., min_length=1,
                              description="feature stores of the same images; several are stacked (late fusion)")
    protocol: Literal[tuple(PROTOCOLS)] = Field(  # type: ignore[valid-type]
        ..., description="; ".join(f"{p.name} ({p.about})" for p in PROTOCOLS.values()))
    test_stores: list[str] = Field(
        [], description="stores of the test images (same nets, same order): VOC test split, or a generic test set")
    out: str | None = Field(None, description="output folder (default: transfer-<protocol> beside the first store)")
    aggregate: Literal["avg", "stack"] | None = Field(
        None, description="over scales: avg or stack (default: the protocol's, as the paper: avg for VOC, "
                          "stack for Caltech and generic)")
    scales: list[int] | None = Field(None, description="stored scales to use (default: all)")
    l2: Literal["aggregate", "both", "net", "scale", "none"] = Field(
        "aggregate", description="where to L2-normalise (aggregate: the final descriptor, the paper's choice)")
    regions: bool = Field(False, description="stack the box-crop descriptors with the whole-image ones (Table 12)")
    c_grid: list[float] = Field(DEFAULT_C_GRID, min_length=1,
                                description="SVM C values to choose from on the validation images")
    c_per_class: bool = Field(False, description="VOC: choose C per class (default: one C by validation mAP)")
    solver: Literal["auto", "newton", "liblinear"] = Field(
        "auto", description="newton (batched Newton-CG in torch, all classes at once), liblinear (sklearn "
                            "LinearSVC), auto (newton)")
    n_splits: int = Field(3, ge=1, description="Caltech / generic: number of random splits")
    seed: int = Field(0, description="seed of the random splits and of the VOC validation hold-out")
    train_per_class: int | None = Field(None, ge=1,
                                        description="training images per class (default: the protocol's: 30 / 60)")
    test_per_class: int | None = Field(
        None, ge=1, description="test images per class at most (default: the protocol's: 50 / all the rest)")
    val_fraction: float = Field(0.2, ge=0.0, lt=1.0,
                                description="share of the training images that chooses C (paper: 20%)")
    splits_file: str | None = Field(None, description="reuse splits saved by an earlier run (splits.json)")
    voc_sets: str | None = Field(
        None, description="the devkit's lists: a VOCdevkit or VOC20xx folder (or its ImageSets/Main or "
                          "ImageSets/Action); default: the store's dataset path")
    voc_test_split: str = Field(
        "test", description="VOC split scored (test; val for VOC2012, whose test labels are not public)")
    method: str | None = Field(None, description="row name in the results table (default: from the stores' nets)")
    progress: bool = Field(True, description="progress over the splits (a bar on a terminal, an artifact in a flow)")
