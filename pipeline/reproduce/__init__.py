"""``vgg reproduce``: the paper's experiments at small scale, end to end, with a report and figures.

:mod:`~pipeline.reproduce.plan` (the runs, scales and budgets), :mod:`~pipeline.reproduce.runner`
(the steps and their records), :mod:`~pipeline.reproduce.experiments` (localisation and transfer),
:mod:`~pipeline.reproduce.findings` (the paper's numbers and the decision rule),
:mod:`~pipeline.reproduce.tables` and :mod:`~pipeline.reproduce.report` (the outputs).
"""

from pipeline.reproduce.runner import ReproduceConfig, ReproduceResult, run_reproduce

__all__ = ["ReproduceConfig", "ReproduceResult", "run_reproduce"]
