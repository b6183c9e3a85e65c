"""Transfer evaluation (paper Appendix B, Tables 11 and 12): linear SVMs on stored deep descriptors.

``run_transfer(TransferConfig)`` runs the PASCAL VOC 2007/2012 classification protocol (mAP with
the devkit's AP rules) or the Caltech-101/256 protocol (mean class recall over 3 random splits) on
one or more feature stores; the pieces are usable on their own: :mod:`.metrics` (VOC AP, mean
class recall), :mod:`.splits`, :mod:`.svm` (an sklearn-compatible linear SVM with a fast
batched Newton-CG solver, :mod:`.ovr`), :mod:`.descriptors` (reading / fusing stores, the raw-pixel baseline).
"""

from pipeline.transfer.descriptors import Descriptors, load_descriptors, write_pixel_store
from pipeline.transfer.metrics import mean_class_recall, per_class_recall, voc_ap, voc_map
from pipeline.transfer.report import table11
from pipeline.transfer.splits import Split, load_splits, make_splits, read_voc_sets, save_splits
from pipeline.transfer.stage import PROTOCOLS, TransferConfig, run_transfer
from pipeline.transfer.svm import LinearSVM, svm_path

__all__ = [
    "Descriptors", "load_descriptors", "write_pixel_store", "mean_class_recall", "per_class_recall", "voc_ap",
    "voc_map", "table11", "Split", "load_splits", "make_splits", "read_voc_sets", "save_splits", "PROTOCOLS",
    "TransferConfig", "run_transfer", "LinearSVM", "svm_path",
]
