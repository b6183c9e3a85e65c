"""Object localisation (paper Appendix A): box-regression ConvNets, dense boxes, greedy merging.

The stages are :mod:`~pipeline.localise.config` and :mod:`~pipeline.localise.run`; the modules and their
rules: docs/formats.md section 4.
"""

from pipeline.localise.config import LocaliseEvalConfig, LocaliseTrainConfig
from pipeline.localise.run import run_localise_evaluate, run_localise_train

__all__ = ["LocaliseTrainConfig", "run_localise_train", "LocaliseEvalConfig", "run_localise_evaluate"]
