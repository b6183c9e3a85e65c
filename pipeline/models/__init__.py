"""Model zoo: the VGG configurations of Table 1, their initialisation and checkpoints."""

from pipeline.models.checkpoint import import_torchvision_weights, load_checkpoint, load_model, save_checkpoint
from pipeline.models.complexity import STACK_NOTE, count_flops, count_params, describe, receptive_field, weight_layers
from pipeline.models.init import NET_A_LAYERS, init_from_net_a, init_weights, net_a_layers
from pipeline.models.vgg import CONFIGS, VGG, ModelConfig, build_model, conv_layer_names

__all__ = [
    "CONFIGS", "VGG", "ModelConfig", "build_model", "conv_layer_names",
    "init_weights", "init_from_net_a", "net_a_layers", "NET_A_LAYERS",
    "save_checkpoint", "load_checkpoint", "load_model", "import_torchvision_weights",
    "count_params", "count_flops", "describe", "weight_layers", "receptive_field", "STACK_NOTE",
]
