"""Transfer evaluation (paper Appendix B, Tables 11 and 12): linear SVMs on stored deep descriptors.

``run_transfer(TransferConfig)`` runs a protocol of the registry on feature stores; the modules and
what each holds: docs/transfer.md.
"""

from pipeline.transfer.config import TransferConfig
from pipeline.transfer.run import run_transfer

__all__ = ["TransferConfig", "run_transfer"]
