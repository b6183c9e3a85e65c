"""VGG pipeline: Simonyan & Zisserman, *Very Deep Convolutional Networks for Large-Scale Image
Recognition* (ICLR 2015) as software: shard, stats, train, evaluate, extract, transfer, localise.

Each stage is a plain function ``run_<stage>(config)`` taking one pydantic config; the ``vgg`` CLI
(:mod:`pipeline.cli`) and the Prefect flows (:mod:`pipeline.flows`) are thin wrappers around them.
"""

__version__ = "0.1.0"

from pipeline.errors import UserError

__all__ = ["UserError", "__version__"]
