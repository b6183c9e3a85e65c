"""The paper's experiments at small scale: the runs, their settings, the budgets (Sections 3-4, Apps. A-B).

Everything of the paper is divided by seven: its 224-pixel crops become 32-pixel crops, its fixed
training scale S = 256 becomes S = 37 and its jittered S in [256, 512] becomes S in [37, 73]. The
test scales follow the paper's rules on these S (Section 4.2: {S-32, S, S+32} scaled, i.e.
{32, 37, 42}; {S_min, mid, S_max} = {37, 55, 73} for jittered nets). The nets are the paper's
configurations at a quarter of its widths (16 to 128 channels, FC 256), trained on the shipped
Fashion-MNIST with the paper's recipe (SGD, momentum 0.9, weight decay 5e-4, dropout 0.5, lr 1e-2
divided by 10 when the validation error stops improving; Section 3.1), the deeper nets starting
from net A's first four conv layers and three FC layers as in Section 3.1.

A run id names a net and its training scale: ``A-fixed``, ``D-jitter``. Experiments beyond the
trained nets have their own ids: ``multicrop`` (Table 5), ``fusion`` (Table 6), ``localisation``
(Tables 8-9), ``transfer`` (Table 11).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import Field

from pipeline.config import ConfigSection
from pipeline.errors import UserError

__all__ = ["NetRun", "RUNS", "EXPERIMENTS", "Budget", "FULL", "QUICK", "S_FIXED", "S_JITTER", "selected", "run_by_id",
           "split_repeat"]

S_FIXED = (37, 37)  # paper S = 256 for 224 crops, divided by 7
S_JITTER = (37, 73)  # paper S in [256, 512]


@dataclass(frozen=True)
class NetRun:
    """One trained net of Table 3: configuration, training scale and where its weights start."""

    id: str
    net: str
    scale: tuple[int, int]
    init_from: str | None  # run id whose net A layers it copies (paper 3.1); None = random init
    seed: int = 0  # seed of init, data order, augmentation and dropout; repeats are ``<id>-seed<k>``

    @property
    def jittered(self) -> bool:
        return self.scale[0] < self.scale[1]

    @property
    def base(self) -> str:
        """The run this one repeats (its own id for seed 0)."""
        return split_repeat(self.id)[0]

    def repeat(self, seed: int) -> NetRun:
        """The same run with another seed (it starts from the same seed-0 net A)."""
        return NetRun(f"{self.id}-seed{seed}" if seed else self.id, self.net, self.scale, self.init_from, seed)


#: Table 3's nets, in training order (A first: the deeper nets start from it).
RUNS: tuple[NetRun, ...] = (
    NetRun("A-fixed", "A", S_FIXED, None),
    NetRun("A-LRN-fixed", "A-LRN", S_FIXED, None),
    NetRun("B-fixed", "B", S_FIXED, "A-fixed"),
    NetRun("B-5x5-fixed", "B-5x5", S_FIXED, "A-fixed"),
    NetRun("C-fixed", "C", S_FIXED, "A-fixed"),
    NetRun("D-fixed", "D", S_FIXED, "A-fixed"),
    NetRun("E-fixed", "E", S_FIXED, "A-fixed"),
    NetRun("C-jitter", "C", S_JITTER, "A-fixed"),
    NetRun("D-jitter", "D", S_JITTER, "A-fixed"),
    NetRun("E-jitter", "E", S_JITTER, "A-fixed"),
)
RUN_IDS = tuple(r.id for r in RUNS)

#: experiments beyond training and single/multi-scale testing, and the runs each needs
EXPERIMENTS: dict[str, tuple[str, ...]] = {
    "multicrop": ("D-jitter", "E-jitter"),
    "fusion": ("D-jitter", "E-jitter"),
    "localisation": ("D-fixed",),
    "transfer": ("D-jitter", "E-jitter"),
}


class Budget(ConfigSection):
    """How much data and compute each experiment gets (the full run's defaults; ``QUICK`` for tests)."""

    train_per_class: int = Field(5500, ge=10, description="Fashion-MNIST training images per class")
    val_per_class: int = Field(500, ge=5, description="validation images per class (the plateau schedule's; taken "
                                                       "from the training file)")
    test_per_class: int | None = Field(None, ge=5, description="test images per class (None: all 10,000 of the "
                                                                "official test file)")
    epoch_images: int = Field(20000, ge=64, description="images per training epoch")
    max_epochs: int = Field(30, ge=1, description="most epochs of a net (A's two lr drops come by epoch 28)")
    patience: int = Field(3, ge=1, description="epochs without val. improvement that make a plateau (2 dropped the lr "
                                              "of A on validation noise after epochs 3 and 8, and two re-runs of "
                                              "A-fixed differed by 3.4 points of test error)")
    lr_drops: int = Field(2, ge=0, description="lr divisions by 10 before training stops at the next plateau")
    multicrop_grid: int = Field(3, ge=1, description="multi-crop grid side (3x3 crops x 2 flips per scale: a 5x5 "
                                                      "grid of 32-pixel crops of 37-pixel images would step 1 pixel)")
    loc_per_class: int = Field(150, ge=1, description="training images per class of the ILSVRC-style set")
    localise_epochs: int | None = Field(None, ge=1, description="localisation training epochs (None: preset's)")
    digits_size: int = Field(64, ge=32, description="side of the Caltech-style digit images")
    mosaics: int = Field(1000, ge=8, description="VOC-style mosaic images")
    transfer_scales: list[int] = Field([64, 96, 128], description="test scales Q of the transfer features (the "
                                                                  "paper's {256, 384, 512} of 256-pixel-S nets, for "
                                                                  "objects drawn at ~0.5 of the image side)")
    transfer_single: int = Field(96, description="the single scale of the single-vs-multi-scale transfer row")


FULL = Budget()
QUICK = Budget(train_per_class=60, val_per_class=10, test_per_class=30, epoch_images=256, max_epochs=1,
               loc_per_class=6, localise_epochs=1, mosaics=48, transfer_scales=[64, 96], multicrop_grid=2)


def split_repeat(rid: str) -> tuple[str, int]:
    """(the run an id repeats, its seed): ``A-fixed-seed1`` -> (``A-fixed``, 1); any other id -> (id, 0)."""
    base, _, k = rid.rpartition("-seed")
    return (base, int(k)) if base in RUN_IDS and k.isdigit() else (rid, 0)


def run_by_id(rid: str) -> NetRun:
    """The run of an id, repeats (``A-fixed-seed1``) included."""
    base, seed = split_repeat(rid)
    return RUNS[RUN_IDS.index(base)].repeat(seed)


def selected(only: list[str] | None, seeds: int = 1) -> tuple[list[NetRun], list[str]]:
    """The runs and experiments to do for ``--only`` (with the runs they need), in order; ``seeds`` > 1
    adds repeats of the selected runs with seeds 1 .. seeds-1 after them (experiments use seed 0)."""
    runs, exps = _selected(only)
    return runs + [r.repeat(k) for k in range(1, seeds) for r in runs], exps


def _selected(only: list[str] | None) -> tuple[list[NetRun], list[str]]:
    if not only:
        return list(RUNS), list(EXPERIMENTS)
    unknown = sorted(set(only) - set(RUN_IDS) - set(EXPERIMENTS))
    if unknown:
        raise UserError(f"--only: unknown id(s) {', '.join(unknown)}; runs: {', '.join(RUN_IDS)}; experiments: "
                        f"{', '.join(EXPERIMENTS)}")
    need = {i for i in only if i in RUN_IDS} | {r for e in only if e in EXPERIMENTS for r in EXPERIMENTS[e]}
    need |= {r.init_from for r in RUNS if r.id in need and r.init_from}
    return [r for r in RUNS if r.id in need], [e for e in EXPERIMENTS if e in only]


def train_settings(run: NetRun, budget: Budget) -> dict[str, Any]:
    """The training config of a run (paper 3.1 at small scale) as a dict, before paths are filled in."""
    return {
        "model": {"config": run.net, "num_classes": 10, "width": 0.25, "fc_width": 256, "crop": 32, "dropout": 0.5},
        "data": {"scale": {"s_min": run.scale[0], "s_max": run.scale[1]}, "flip": True, "colour_shift": 0.1,
                 "shuffle_buffer": 2000, "epoch_images": budget.epoch_images, "workers": 1},
        "optim": {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.0005, "batch_size": 64},
        "schedule": {"max_epochs": budget.max_epochs, "lr_drops": budget.lr_drops, "patience": budget.patience},
        "init": {"method": "glorot", "seed": run.seed},
        "seed": run.seed, "checkpoint_every": 200, "log_every": 50,
    }
