"""Object localisation (paper Appendix A): box-regression ConvNets, dense boxes, greedy merging.

- :mod:`~pipeline.localise.config` / :mod:`~pipeline.localise.run`: the stages' configs and their runs.
- :mod:`~pipeline.localise.boxes`: box conversions, IoU with inclusive widths, ground-truth checks.
- :mod:`~pipeline.localise.net`: the localisation net (SCR / PCR head on a classification net).
- :mod:`~pipeline.localise.augment` / :mod:`~pipeline.localise.training`: training crops, the Euclidean loss.
- :mod:`~pipeline.localise.merge`: OverFeat's greedy merging.
- :mod:`~pipeline.localise.protocols`: the central-crop and dense testing protocols.
- :mod:`~pipeline.localise.metric`: the ILSVRC localisation error.
- :mod:`~pipeline.localise.selection`: usable images, class matching, the blacklist, saved top-k classes.
- :mod:`~pipeline.localise.records` / :mod:`~pipeline.localise.tables`: per-image records, Tables 8 and 9.
- :mod:`~pipeline.localise.demo`: the demo's Tables 8-9 on the ILSVRC-style set.
"""

from pipeline.localise.boxes import (
    GroundTruth,
    centre_quarter_box,
    corners_to_cxcywh,
    cxcywh_to_corners,
    ground_truth,
    iou,
    iou_matrix,
    whole_image_box,
)
from pipeline.localise.config import LocaliseEvalConfig, LocaliseTrainConfig
from pipeline.localise.merge import MergeConfig, best_box, greedy_merge
from pipeline.localise.metric import image_localisation_error
from pipeline.localise.net import box_outputs, head_outputs, load_localiser, localisation_net
from pipeline.localise.run import run_localise_evaluate, run_localise_train

__all__ = [
    "GroundTruth", "ground_truth", "iou", "iou_matrix", "corners_to_cxcywh", "cxcywh_to_corners",
    "whole_image_box", "centre_quarter_box", "MergeConfig", "greedy_merge", "best_box",
    "image_localisation_error", "localisation_net", "box_outputs", "head_outputs", "load_localiser",
    "LocaliseTrainConfig", "run_localise_train", "LocaliseEvalConfig", "run_localise_evaluate",
]
