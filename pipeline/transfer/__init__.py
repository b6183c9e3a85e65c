"""Transfer evaluation (paper Appendix B, Tables 11 and 12): linear SVMs on stored deep descriptors.

``run_transfer(TransferConfig)`` runs a protocol of :data:`PROTOCOLS` on feature stores; the modules
and what each holds: docs/transfer.md.
"""

from pipeline.transfer.config import DEFAULT_C_GRID, TransferConfig
from pipeline.transfer.descriptors import Descriptors, load_descriptors, write_pixel_store
from pipeline.transfer.metrics import mean_class_recall, per_class_recall, voc_ap, voc_map
from pipeline.transfer.registry import PROTOCOLS, TransferProtocol
from pipeline.transfer.report import table11
from pipeline.transfer.run import run_transfer
from pipeline.transfer.splits import Split, load_splits, make_splits, save_splits
from pipeline.transfer.svm import LinearSVM, svm_path

__all__ = [
    "Descriptors", "load_descriptors", "write_pixel_store", "mean_class_recall", "per_class_recall", "voc_ap",
    "voc_map", "table11", "Split", "load_splits", "make_splits", "save_splits", "PROTOCOLS", "TransferProtocol",
    "DEFAULT_C_GRID", "TransferConfig", "run_transfer", "LinearSVM", "svm_path",
]
