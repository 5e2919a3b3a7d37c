"""The ResNet family from scratch: blocks, one configurable ResNet, and a registry of named variants.

``blocks.py`` holds the basic and bottleneck blocks in both orders, ``networks.py`` the ResNet whose
widths, groups, stem, shortcut and block order are arguments (and the CIFAR SmallResNet), and
``registry.py`` one entry per named variant. Usage::

    from resbench.models import build_model, list_models
    model = build_model("resnet50")            # 1000 classes, ImageNet stem
    cifar = build_model("small_resnet20")      # 10 classes, 3x3 stem, three stages
"""

from resbench.models.blocks import (
    Block,
    BottleneckBlock,
    PreActBottleneckBlock,
    PreActResidualBlock,
    ResidualBlock,
)
from resbench.models.networks import ResNet, SmallResNet
from resbench.models.registry import (
    Spec,
    build_model,
    default_image_size,
    input_channels,
    list_models,
    model_family,
)

__all__ = [
    "Block",
    "BottleneckBlock",
    "PreActBottleneckBlock",
    "PreActResidualBlock",
    "ResNet",
    "ResidualBlock",
    "SmallResNet",
    "Spec",
    "build_model",
    "default_image_size",
    "input_channels",
    "list_models",
    "model_family",
]
