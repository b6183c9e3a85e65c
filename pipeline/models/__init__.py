"""Model zoo: the VGG nets of Table 1 (one :class:`NetSpec` each), their initialisation and checkpoints."""

from pipeline.models.checkpoint import import_torchvision_weights, load_checkpoint, load_model, save_checkpoint
from pipeline.models.complexity import STACK_NOTE, count_flops, count_params, net_complexity, receptive_field
from pipeline.models.init import init_from_net_a, init_weights
from pipeline.models.vgg import NET_A_LAYERS, NETS, VGG, ModelConfig, build_model

__all__ = [
    "NETS", "VGG", "ModelConfig", "build_model", "NET_A_LAYERS",
    "init_weights", "init_from_net_a",
    "save_checkpoint", "load_checkpoint", "load_model", "import_torchvision_weights",
    "count_params", "count_flops", "net_complexity", "receptive_field", "STACK_NOTE",
]
