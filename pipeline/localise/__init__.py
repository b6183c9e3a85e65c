"""Object localisation (paper Appendix A): box-regression ConvNets, dense boxes, greedy merging.

The stages: :mod:`~pipeline.localise.config`, :mod:`~pipeline.localise.run`. The paper's parts: ``boxes``
(corners, IoU, ground truth), ``net`` (SCR / PCR heads), ``augment`` and ``training`` (crops, the Euclidean
loss), ``merge`` (OverFeat's greedy merging), ``protocols`` (central crop, dense), ``metric`` (the ILSVRC
error), ``selection`` (usable images, classes, blacklist, saved top-k), ``records`` and ``tables`` (per-image
records, Tables 8-9), ``demo`` (the demo's Tables 8-9 on the ILSVRC-style set).
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
