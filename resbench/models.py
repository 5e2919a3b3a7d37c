"""The ResNet family from scratch: basic and bottleneck blocks, the ImageNet ResNet, the CIFAR SmallResNet.

Module names follow torchvision's ``resnet.py`` (conv1/bn1/layer1..4/fc, ``downsample``), so a torchvision
state dict loads into ours with ``strict=True``. Usage::

    from resbench.models import build_model, list_models
    model = build_model("resnet50")            # 1000 classes, ImageNet stem
    cifar = build_model("small_resnet20")      # 10 classes, 3x3 stem, three stages
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BottleneckBlock",
    "ResNet",
    "ResidualBlock",
    "SmallResNet",
    "build_model",
    "list_models",
    "load_torchvision_weights",
    "model_family",
]


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False)


def _projection(in_ch: int, out_ch: int, stride: int, residual: bool) -> nn.Module | None:
    """1x1 conv + BN on the skip path wherever the shape changes (He et al.'s option B)."""
    if not residual or (stride == 1 and in_ch == out_ch):
        return None
    return nn.Sequential(conv1x1(in_ch, out_ch, stride), nn.BatchNorm2d(out_ch))


class ResidualBlock(nn.Module):
    """Basic block: conv3x3-BN-ReLU-conv3x3-BN, plus the identity, then ReLU.

    ``residual=False`` drops the skip connection, giving the "plain" network of the same depth and
    width that He et al. compare against.
    """

    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int = 1, residual: bool = True) -> None:
        super().__init__()
        out_ch = planes * self.expansion
        self.residual = residual
        self.conv1 = conv3x3(in_ch, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample = _projection(in_ch, out_ch, stride, residual)

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if not self.residual:
            return F.relu(out)
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)  # ReLU after the addition keeps the skip path clean


class BottleneckBlock(nn.Module):
    """Bottleneck: conv1x1-BN-ReLU, conv3x3-BN-ReLU, conv1x1-BN (x4 channels), plus the identity, ReLU.

    The stride sits on the 3x3 convolution, not the first 1x1 as in the paper: this is "ResNet v1.5",
    as in torchvision, slightly more accurate and 4.1 rather than 3.8 GMACs for ResNet-50.
    """

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1, residual: bool = True) -> None:
        super().__init__()
        out_ch = planes * self.expansion
        self.residual = residual
        self.conv1 = conv1x1(in_ch, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, out_ch)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.downsample = _projection(in_ch, out_ch, stride, residual)

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if not self.residual:
            return F.relu(out)
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


Block = type[ResidualBlock] | type[BottleneckBlock]


class _ResNetBase(nn.Module):
    """Shared machinery: stages of blocks, He initialisation, the head."""

    stage_names: tuple[str, ...] = ()

    def _make_layer(
        self, block: Block, in_ch: int, planes: int, blocks: int, stride: int, residual: bool
    ) -> tuple[nn.Sequential, int]:
        layers = [block(in_ch, planes, stride, residual)]
        out_ch = planes * block.expansion
        layers += [block(out_ch, planes, 1, residual) for _ in range(blocks - 1)]
        return nn.Sequential(*layers), out_ch

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # He et al. 2015: keeps the variance of activations constant through ReLU layers
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            # Each block then starts as the identity (Goyal et al. 2017), which helps large batches
            for m in self.modules():
                if isinstance(m, ResidualBlock | BottleneckBlock):
                    nn.init.zeros_(m.last_bn().weight)

    def blocks(self) -> list[nn.Module]:
        """Every residual (or plain) block, in order of depth."""
        return [m for m in self.modules() if isinstance(m, ResidualBlock | BottleneckBlock)]


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}")


class ResNet(_ResNetBase):
    """ImageNet ResNet: 7x7/2 conv stem and 3x3/2 max-pool, four stages of 64..512 x expansion, fc."""

    stage_names = ("stem", "layer1", "layer2", "layer3", "layer4", "head")

    def __init__(
        self,
        block: Block,
        layers: Sequence[int],
        num_classes: int = 1000,
        in_channels: int = 3,
        zero_init_residual: bool = False,
        residual: bool = True,
    ) -> None:
        super().__init__()
        _check_positive(num_classes=num_classes, in_channels=in_channels)
        if len(layers) != 4:
            raise ValueError(f"ResNet takes four stages; got layers={list(layers)}")
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        ch = 64
        self.layer1, ch = self._make_layer(block, ch, 64, layers[0], 1, residual)
        self.layer2, ch = self._make_layer(block, ch, 128, layers[1], 2, residual)
        self.layer3, ch = self._make_layer(block, ch, 256, layers[2], 2, residual)
        self.layer4, ch = self._make_layer(block, ch, 512, layers[3], 2, residual)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(ch, num_classes)
        self._init_weights(zero_init_residual)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(F.relu(self.bn1(self.conv1(x))))

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.head(x)


class SmallResNet(_ResNetBase):
    """CIFAR ResNet (He et al. 2015, section 4.2): 3x3/1 stem, no max-pool, three stages, fc.

    Stages have ``initial_channels`` x1/x2/x4 channels (16/32/64 by default). Shortcuts that change
    shape are 1x1 projections (option B), so parameter counts run slightly above the paper's option A.
    """

    stage_names = ("stem", "layer1", "layer2", "layer3", "head")

    def __init__(
        self,
        block: Block,
        layers: Sequence[int],
        num_classes: int = 10,
        in_channels: int = 3,
        initial_channels: int = 16,
        zero_init_residual: bool = False,
        residual: bool = True,
    ) -> None:
        super().__init__()
        _check_positive(
            num_classes=num_classes, in_channels=in_channels, initial_channels=initial_channels
        )
        if len(layers) != 3:
            raise ValueError(f"SmallResNet takes three stages; got layers={list(layers)}")
        c = initial_channels
        self.conv1 = conv3x3(in_channels, c)
        self.bn1 = nn.BatchNorm2d(c)
        ch = c
        self.layer1, ch = self._make_layer(block, ch, c, layers[0], 1, residual)
        self.layer2, ch = self._make_layer(block, ch, 2 * c, layers[1], 2, residual)
        self.layer3, ch = self._make_layer(block, ch, 4 * c, layers[2], 2, residual)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(ch, num_classes)
        self._init_weights(zero_init_residual)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn1(self.conv1(x)))

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.head(x)


@dataclass(frozen=True)
class Spec:
    block: Block
    layers: tuple[int, ...]
    small: bool = (
        False  # CIFAR-style SmallResNet (32x32 input, 10 classes) instead of ImageNet ResNet
    )


_SPECS: dict[str, Spec] = {
    "resnet18": Spec(ResidualBlock, (2, 2, 2, 2)),
    "resnet34": Spec(ResidualBlock, (3, 4, 6, 3)),
    "resnet50": Spec(BottleneckBlock, (3, 4, 6, 3)),
    "resnet101": Spec(BottleneckBlock, (3, 4, 23, 3)),
    "resnet152": Spec(BottleneckBlock, (3, 8, 36, 3)),
    # the tutorial's SmallResNet18: two basic blocks per stage, three stages
    "small_resnet18": Spec(ResidualBlock, (2, 2, 2), small=True),
    # He et al.'s CIFAR networks: depth 6n+2
    "small_resnet20": Spec(ResidualBlock, (3, 3, 3), small=True),
    "small_resnet32": Spec(ResidualBlock, (5, 5, 5), small=True),
    "small_resnet44": Spec(ResidualBlock, (7, 7, 7), small=True),
    "small_resnet56": Spec(ResidualBlock, (9, 9, 9), small=True),
    "small_resnet110": Spec(ResidualBlock, (18, 18, 18), small=True),
}


def list_models(family: str = "all") -> list[str]:
    """Registry names; ``family`` is "all", "imagenet" or "cifar"."""
    if family not in ("all", "imagenet", "cifar"):
        raise ValueError(f"unknown model family {family!r}; choose one of: all, imagenet, cifar")
    return [
        name
        for name, spec in _SPECS.items()
        if family == "all" or spec.small == (family == "cifar")
    ]


def _spec(name: str) -> Spec:
    try:
        return _SPECS[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; choose one of: {', '.join(list_models())}"
        ) from None


def model_family(name: str) -> str:
    """ "cifar" for the SmallResNet variants, "imagenet" for the others."""
    return "cifar" if _spec(name).small else "imagenet"


def default_image_size(name: str) -> int:
    """224 for the ImageNet variants, 32 for the CIFAR family."""
    return 32 if _spec(name).small else 224


def build_model(name: str, **kwargs) -> ResNet | SmallResNet:
    """Build a registry variant; kwargs (num_classes, in_channels, residual, ...) override defaults."""
    spec = _spec(name)
    cls = SmallResNet if spec.small else ResNet
    return cls(spec.block, spec.layers, **kwargs)


def load_torchvision_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a torchvision ResNet state dict saved on disk (e.g. ``resnet50-11ad3fa6.pth``) into ``model``.

    Our module names match torchvision's, so the load is strict: a missing or extra key is an error.
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    model.load_state_dict(state, strict=True)
    return model
