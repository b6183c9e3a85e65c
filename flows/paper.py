"""Prefect entrypoints of the two pipelines (``prefect.yaml``): ``vgg-paper``, the whole paper on one
dataset, and ``paper-reproduction``, the paper's experiments (Tables 3-6, 8-9, 11).

Only imports: the flows live in :mod:`pipeline.flows.paper` and :mod:`pipeline.flows.reproduce`.
"""

from pipeline.flows.paper import paper_flow
from pipeline.flows.reproduce import reproduction_flow

__all__ = ["paper_flow", "reproduction_flow"]
