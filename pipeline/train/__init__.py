"""The training stage (paper 3.1 training, 3.3 multi-device): ``run_train(TrainConfig) -> TrainResult``.

Modules: :mod:`~pipeline.train.config` (the one config), :mod:`~pipeline.train.loader`
(webdataset input pipeline), :mod:`~pipeline.train.recipe` (SGD, plateau schedule,
initialisation), :mod:`~pipeline.train.distributed` (torchrun collectives), :mod:`~pipeline.train.checkpoints`
(the run folder's files), :mod:`~pipeline.train.engine` (the training engine: epoch loop, checkpoints,
resume, metrics, progress, DDP; shared with localisation training), :mod:`~pipeline.train.validate`
(exact top-1/top-5), :mod:`~pipeline.train.loop` (the classification run: the engine's task).
"""

from pipeline.train.config import DataConfig, InitConfig, OptimConfig, ScheduleConfig, TrainConfig, TrainRuntimeConfig
from pipeline.train.loop import run_train

__all__ = [
    "run_train",
    "TrainConfig",
    "DataConfig",
    "OptimConfig",
    "ScheduleConfig",
    "InitConfig",
    "TrainRuntimeConfig",
]
