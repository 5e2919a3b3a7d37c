"""One ResNet whose widths, groups, stem, shortcut and block order are arguments; the CIFAR SmallResNet.

torchvision's ResNet, ResNeXt and Wide ResNet, timm's ResNet-D and He et al.'s pre-activation
ResNets are all this class with other arguments (``registry.py`` names them). Module names follow
torchvision's (conv1/bn1/maxpool/layer1..4/avgpool/fc), so its state dicts load with
``strict=True``; the deep stem and the average-pool shortcut follow timm's names. Usage::

    ResNet(BottleneckBlock, (3, 4, 6, 3), groups=32, width_per_group=4)       # ResNeXt-50 32x4d
    ResNet(BottleneckBlock, (3, 4, 6, 3), stem="deep", avg_down=True)         # ResNet-50-D
    SmallResNet(BottleneckBlock, (18, 18, 18), preact=True)                   # pre-act ResNet-164
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from resbench.models.blocks import Block, conv3x3, in_order

# "7x7": 7x7/2 conv + 3x3/2 max-pool (torchvision); "deep": three 3x3 convs, the first /2, of widths
# stem_width/2, stem_width/2, stem_width, + the max-pool (ResNet-C/D); "cifar": one 3x3/1, no pool
STEMS = {"7x7": 4, "deep": 4, "cifar": 1}  # each stem's downsampling


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}")


class ResNet(nn.Module):
    """A stem, stages of blocks (the first of each stage but the first strides 2), a head.

    Args:
        block: the kind of block, basic or bottleneck; ``preact`` picks its order.
        layers: blocks per stage.
        widths: planes per stage (a stage's output is planes x the block's expansion).
        groups, width_per_group: the bottleneck's 3x3, as torchvision's ResNeXt and Wide ResNet.
        stem: one of STEMS; stem_width its output channels.
        avg_down: average-pool then 1x1 conv on the shortcuts that stride (ResNet-D).
        preact: pre-activated blocks (He et al. 2016): the stem ends in its conv, the blocks
            activate their inputs, and a final BN-ReLU precedes the pooling.
        residual: False drops every skip connection, giving the plain twin.
    """

    def __init__(
        self,
        block: type[Block],
        layers: Sequence[int],
        num_classes: int = 1000,
        in_channels: int = 3,
        zero_init_residual: bool = False,
        residual: bool = True,
        *,
        widths: Sequence[int] = (64, 128, 256, 512),
        groups: int = 1,
        width_per_group: int = 64,
        stem: str = "7x7",
        stem_width: int = 64,
        avg_down: bool = False,
        preact: bool = False,
    ) -> None:
        super().__init__()
        _check_positive(num_classes=num_classes, in_channels=in_channels, groups=groups,
                        width_per_group=width_per_group, stem_width=stem_width)  # fmt: skip
        if len(layers) != len(widths):
            raise ValueError(
                f"{type(self).__name__} takes {len(widths)} stages; got layers={list(layers)}"
            )
        if stem not in STEMS:
            raise ValueError(f"unknown stem {stem!r}; choose one of: {', '.join(STEMS)}")
        self.stem_type, self.preact = stem, preact
        self._make_stem(stem, in_channels, stem_width)
        block = in_order(block, preact)
        ch, self.layer_names = stem_width, []
        for k, (planes, n) in enumerate(zip(widths, layers, strict=True)):
            layer, ch = self._make_layer(
                block,
                ch,
                planes,
                n,
                1 if k == 0 else 2,
                residual,
                groups,
                width_per_group,
                avg_down,
            )
            self.layer_names.append(f"layer{k + 1}")
            self.add_module(self.layer_names[-1], layer)
        if preact:
            self.final_bn = nn.BatchNorm2d(ch)  # the last unit's activation, after its addition
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(ch, num_classes)
        self.stage_names = ("stem", *self.layer_names, "head")
        # the input side that leaves a 1x1 map: the smallest size the network takes whole
        self.downsampling = STEMS[stem] * 2 ** (len(layers) - 1)
        self._init_weights(zero_init_residual)

    def _make_stem(self, stem: str, in_channels: int, width: int) -> None:
        if stem == "deep":
            half = width // 2
            self.conv1 = nn.Sequential(
                conv3x3(in_channels, half, stride=2), nn.BatchNorm2d(half), nn.ReLU(inplace=True),
                conv3x3(half, half), nn.BatchNorm2d(half), nn.ReLU(inplace=True),
                conv3x3(half, width),
            )  # fmt: skip
        elif stem == "7x7":
            self.conv1 = nn.Conv2d(
                in_channels, width, kernel_size=7, stride=2, padding=3, bias=False
            )
        else:
            self.conv1 = conv3x3(in_channels, width)
        if not self.preact:  # pre-activated: the first block's BN-ReLU follows the stem's conv
            self.bn1 = nn.BatchNorm2d(width)
        if stem != "cifar":
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

    @staticmethod
    def _make_layer(
        block: type[Block],
        in_ch: int,
        planes: int,
        blocks: int,
        stride: int,
        residual: bool,
        groups: int,
        width_per_group: int,
        avg_down: bool,
    ) -> tuple[nn.Sequential, int]:
        shape = dict(residual=residual, groups=groups, width_per_group=width_per_group,
                     avg_down=avg_down)  # fmt: skip
        layers = [block(in_ch, planes, stride, **shape)]
        out_ch = planes * block.expansion
        layers += [block(out_ch, planes, 1, **shape) for _ in range(blocks - 1)]
        return nn.Sequential(*layers), out_ch

    def _init_weights(self, zero_init_residual: bool) -> None:
        if self.fc.weight.is_meta:
            return  # shapes only (FLOP counts): no values to draw, and meta's normal_ is slow
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # He et al. 2015: keeps the variance of activations constant through ReLU layers
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            # Each block then starts as the identity (Goyal et al. 2017), which helps large batches
            for b in self.blocks():
                b.zero_init_last()

    def blocks(self) -> list[Block]:
        """Every residual (or plain) block, in order of depth."""
        return [m for m in self.modules() if isinstance(m, Block)]

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        if not self.preact:
            x = F.relu(self.bn1(x))
        return x if self.stem_type == "cifar" else self.maxpool(x)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        if self.preact:
            x = F.relu(self.final_bn(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for name in self.layer_names:
            x = getattr(self, name)(x)
        return self.head(x)


class SmallResNet(ResNet):
    """CIFAR ResNet (He et al. 2015, section 4.2): 3x3/1 stem, no max-pool, three stages, fc.

    Stages have ``initial_channels`` x1/x2/x4 planes (16/32/64 by default). Shortcuts that change
    shape are 1x1 projections (option B), so parameter counts run slightly above the paper's option A.
    Bottleneck blocks give He et al.'s 9n+2 networks (stage outputs 64/128/256).
    """

    def __init__(
        self,
        block: type[Block],
        layers: Sequence[int],
        num_classes: int = 10,
        in_channels: int = 3,
        initial_channels: int = 16,
        zero_init_residual: bool = False,
        residual: bool = True,
        **options,
    ) -> None:
        _check_positive(initial_channels=initial_channels)
        if len(layers) != 3:
            raise ValueError(f"SmallResNet takes three stages; got layers={list(layers)}")
        c = initial_channels
        super().__init__(block, layers, num_classes, in_channels, zero_init_residual, residual,
                         widths=(c, 2 * c, 4 * c), stem="cifar", stem_width=c, **options)  # fmt: skip
