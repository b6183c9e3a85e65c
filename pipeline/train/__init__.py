"""The training stage (paper 3.1 training, 3.3 multi-device): ``run_train(TrainConfig) -> TrainResult``.

:mod:`~pipeline.train.run` reads top to bottom; :mod:`~pipeline.train.classification` is the SGD step and
epoch end, :mod:`~pipeline.train.engine` the loop shared with localisation training (docs/training.md).
"""

from pipeline.train.config import TrainConfig
from pipeline.train.run import run_train

__all__ = ["run_train", "TrainConfig"]
