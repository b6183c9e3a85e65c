"""The training stage's one config (paper 3.1 recipe, 3.3 multi-device), its defaults the paper's."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipeline.config import ConfigSection
from pipeline.models import ModelConfig
from pipeline.preprocess import TrainScale
from pipeline.runtime import Bf16, RuntimeConfig, RuntimeStageConfig

__all__ = ["TrainConfig", "DataConfig", "OptimConfig", "ScheduleConfig", "InitConfig", "TrainRuntimeConfig"]


class DataConfig(ConfigSection):
    """Shards, training scale and augmentation (paper 3.1), and the input pipeline."""

    shards: str = Field(..., description="shard folder written by `vgg shard` (holds manifest.json)")
    train_split: str = Field("train", description="split to train on")
    val_split: str | None = Field("val", description="split validated each epoch (centre crop); null = none")
    scale: TrainScale = Field(default_factory=TrainScale,
                              description="training scale S: s_min = s_max fixed, s_min < s_max jittered")
    test_scale: int | None = Field(None, ge=1, description="Q of the validation centre crop (default: S, or "
                                                           "(S_min+S_max)/2)")
    flip: bool = Field(True, description="random horizontal flip")
    colour_shift: float = Field(0.1, ge=0, description="std of AlexNet's PCA colour-shift alphas (0 = off); needs "
                                                       "`vgg stats`")
    mean: Literal["stats"] | tuple[float, float, float] = Field(
        "stats", description="mean RGB (0-255) subtracted from each pixel: 'stats' = the training set's (manifest)")
    std: Literal["stats"] | tuple[float, float, float] = Field(
        (1.0, 1.0, 1.0), description="per-channel divisor after mean subtraction: 1 = paper; 'stats' = the training "
                                     "set's RGB std")
    shardshuffle: bool = Field(True, description="shuffle the shard order each epoch (same order on every rank)")
    shuffle_buffer: int = Field(5000, ge=0, description="samples in each reader's shuffle buffer (0 = keep shard "
                                                         "order)")
    epoch_images: int | None = Field(None, ge=1, description="images per epoch (all ranks together); default: the "
                                                             "split's count")
    workers: int = Field(2, ge=0, description="loader worker processes per rank (0 = decode in the training process)")
    draft: bool = Field(True, description="JPEG draft decoding (DCT-domain downscale when S is well below the "
                                          "stored size)")
    decode: Literal["cpu", "gpu", "auto"] = Field(
        "cpu", description="where training JPEGs are decoded: cpu (loader workers), gpu (nvJPEG on the training "
        "device, other images in the workers), auto (gpu when training on CUDA)")


class OptimConfig(ConfigSection):
    """Mini-batch SGD with momentum (paper 3.1)."""

    lr: float = Field(1e-2, gt=0, description="initial learning rate (paper 1e-2; 1e-3 when fine-tuning from S=256)")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    weight_decay: float = Field(5e-4, ge=0, description="L2 penalty multiplier")
    batch_size: int = Field(256, ge=1, description="global batch (all ranks and accumulation steps together)")
    micro_batch: int | None = Field(None, ge=1, description="images per forward pass on one device (gradient "
                                                            "accumulation when below the rank's share); default: the "
                                                            "whole share")


class ScheduleConfig(ConfigSection):
    """Learning rate divided when validation top-1 stops improving, a few times, then stop (paper 3.1)."""

    max_epochs: int = Field(74, ge=1, description="maximum epochs (paper: 370K iterations = 74 epochs)")
    lr_drops: int = Field(3, ge=0, description="times the lr is divided before training stops at the next plateau")
    drop_factor: float = Field(10.0, gt=1, description="divisor of the lr at a plateau")
    patience: int = Field(1, ge=1, description="epochs without improvement of val top-1 that make a plateau")
    min_delta: float = Field(0.0, ge=0, description="improvement of val top-1 (fraction) that counts")
    max_steps: int | None = Field(None, ge=1, description="stop after this many SGD steps in total (tests, benchmarks)")


class InitConfig(ConfigSection):
    """Initialisation (paper 3.1): random, from a trained net A, or all weights from a checkpoint."""

    method: Literal["paper", "glorot"] = Field("paper", description="random init of layers not copied: N(0, std^2) "
                                                                    "or Glorot")
    std: float = Field(1e-2, gt=0, description="std of the paper's normal init")
    seed: int = Field(0, description="seed of the random init")
    net_a: str | None = Field(None, description="checkpoint of a trained net A: copy its first four convs and "
                                                   "three FCs (into B-5x5: the three FCs)")
    checkpoint: str | None = Field(None, description="fine-tune: start from all weights of this checkpoint (same "
                                                     "architecture)")
    trainable: Literal["all", "fc"] = Field("all", description="layers trained: all, or fc = only the three FC layers "
                                                              "(conv frozen: no gradient, not in the optimiser; 4.4)")

    @model_validator(mode="after")
    def _one_source(self) -> InitConfig:
        if self.net_a and self.checkpoint:
            raise ValueError("give init.net_a or init.checkpoint, not both")
        return self


class TrainRuntimeConfig(RuntimeConfig):
    """The runtime section of training: bf16 where native and channels_last by default, plus compile and pinning."""

    bf16: Bf16 = Field("auto", description="bf16 autocast; auto = on where the device has native bf16 (GPUs, "
                                           "CPUs with AVX512-BF16/AMX)")
    channels_last: bool = Field(True, description="NHWC memory format for convolutions")
    threads: int | None = Field(None, ge=1, description="torch CPU threads per process (default on CPU: the cores left "
                                                         "to this rank after its loader workers)")
    compile: bool = Field(False, description="torch.compile the model")
    pin_memory: bool = Field(True, description="pinned host memory for batches (GPU only)")


class TrainConfig(RuntimeStageConfig):
    """Everything a training run needs; saved in ``config.yaml`` and in every checkpoint."""

    out: str = Field(..., description="output folder: checkpoints/{last,best}.pt, metrics.jsonl, config.yaml")
    model: ModelConfig = Field(default_factory=ModelConfig,
                               description="the net (Table 1 config, width, FC width, crop, dropout)")
    data: DataConfig = Field(..., description="shards, scale and augmentation")
    optim: OptimConfig = Field(default_factory=OptimConfig, description="SGD settings")
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig, description="lr schedule and stopping")
    init: InitConfig = Field(default_factory=InitConfig, description="weight initialisation")
    runtime: TrainRuntimeConfig = Field(default_factory=TrainRuntimeConfig,
                                        description="device, bf16, channels_last, threads, compile, pin_memory")
    seed: int = Field(0, description="seed of data order, augmentation and dropout")
    checkpoint_every: int = Field(500, ge=0, description="also write checkpoints/last.pt every N SGD steps (0 = "
                                                         "epoch ends only)")
    log_every: int = Field(20, ge=1, description="SGD steps between metrics.jsonl training rows")
    resume: bool = Field(False, description="continue the run in `out` from checkpoints/last.pt")
    progress: bool | None = Field(None, description="progress bar (default: when stderr is a terminal)")

    def test_scale(self) -> int:
        """Q of the validation centre crop."""
        return self.data.test_scale or self.data.scale.single_test_scale()


#: fields that may differ between a run and its resumption (they do not change the result)
RESUME_FREE = {"resume", "progress", "log_every", "checkpoint_every", "runtime.threads", "runtime.pin_memory",
               "out",  # a moved run folder resumes where it now is
               "data.shards",  # moved shards resume; their fingerprint is checked instead
               "schedule.max_epochs", "schedule.max_steps"}  # limits: raising them continues a finished run
