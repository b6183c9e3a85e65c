"""Evaluation (paper 3.2, 4.1-4.4): dense and multi-crop protocols, multi-scale, combination, fusion.

:mod:`~pipeline.evaluate.run` reads top to bottom; :mod:`~pipeline.evaluate.protocols` holds the paper's
test protocols, :mod:`~pipeline.evaluate.tables` and :mod:`~pipeline.evaluate.ensemble` Tables 3-6.
"""

from pipeline.evaluate.config import EvaluateConfig
from pipeline.evaluate.metrics import classification_report, per_class_accuracy, topk_error
from pipeline.evaluate.posteriors import Posteriors, load_posteriors, merge_posteriors
from pipeline.evaluate.protocols import classify, crop_grid, dense_evaluate, fuse, multi_crop, rescale_batch
from pipeline.evaluate.run import run_evaluate
from pipeline.evaluate.tables import to_csv, to_markdown

__all__ = [
    "classify", "crop_grid", "dense_evaluate", "fuse", "multi_crop", "rescale_batch", "topk_error",
    "per_class_accuracy", "classification_report", "Posteriors", "load_posteriors", "merge_posteriors",
    "EvaluateConfig", "run_evaluate", "to_csv", "to_markdown",
]
