"""Object localisation (paper Appendix A): box-regression ConvNets, dense boxes, greedy merging.

- :mod:`~pipeline.localise.boxes`: box conversions, IoU with inclusive widths, ground-truth checks.
- :mod:`~pipeline.localise.merge`: OverFeat's greedy merging.
- :mod:`~pipeline.localise.net`: the localisation net (SCR / PCR head on a classification net).
- :mod:`~pipeline.localise.augment`: training crops that move the boxes along.
- :mod:`~pipeline.localise.metric`: the ILSVRC localisation error.
- :mod:`~pipeline.localise.protocols`: the central-crop and dense testing protocols.
- :mod:`~pipeline.localise.selection`: the devkit's validation blacklist; top-k classes from saved posteriors.
- :mod:`~pipeline.localise.tables`: Tables 8 and 9 (rows, Markdown).
- :mod:`~pipeline.localise.train` / :mod:`~pipeline.localise.evaluate`: the stages.
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
from pipeline.localise.evaluate import LocaliseEvalConfig, run_localise_evaluate
from pipeline.localise.merge import MergeConfig, best_box, greedy_merge
from pipeline.localise.metric import image_localisation_error
from pipeline.localise.net import box_outputs, head_outputs, load_localiser, localisation_net
from pipeline.localise.train import LocaliseTrainConfig, run_localise_train

__all__ = [
    "GroundTruth", "ground_truth", "iou", "iou_matrix", "corners_to_cxcywh", "cxcywh_to_corners",
    "whole_image_box", "centre_quarter_box", "MergeConfig", "greedy_merge", "best_box",
    "image_localisation_error", "localisation_net", "box_outputs", "head_outputs", "load_localiser",
    "LocaliseTrainConfig", "run_localise_train", "LocaliseEvalConfig", "run_localise_evaluate",
]
