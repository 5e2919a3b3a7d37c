"""Residual blocks: basic and bottleneck, in the original order and pre-activated.

The original order (He et al. 2015) is conv-BN-ReLU inside the branch and a ReLU after the addition;
the pre-activated one (He et al. 2016, "Identity Mappings in Deep Residual Networks", fig. 4e) is
BN-ReLU-conv inside the branch and a clean addition. Module names follow torchvision's
``resnet.py`` (conv1/bn1/.../downsample), so its state dicts load with ``strict=True``. Usage::

    block = BottleneckBlock(256, 128, stride=2, groups=32, width_per_group=4)  # a ResNeXt unit
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv3x3(in_ch: int, out_ch: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(
        in_ch, out_ch, kernel_size=3, stride=stride, padding=1, groups=groups, bias=False
    )


def conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False)


def shortcut(
    in_ch: int, out_ch: int, stride: int, residual: bool, avg_down: bool = False, norm: bool = True
) -> nn.Sequential | None:
    """The skip path's projection wherever the shape changes (He et al.'s option B), else None.

    A 1x1 conv + BN; with ``avg_down`` (ResNet-D, He et al. 2019 "Bag of Tricks") a 2x2 average pool
    does the striding, so the 1x1 conv sees every pixel rather than one in four (timm's
    ``downsample_avg``: an Identity in the pool's place keeps its module names where the stride is
    1). Pre-activated blocks pass ``norm=False``: their projection takes the BN-ReLU output already.
    """
    if not residual or (stride == 1 and in_ch == out_ch):
        return None
    if avg_down:
        pool = (
            nn.Identity()
            if stride == 1
            else nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)
        )
        layers = [pool, conv1x1(in_ch, out_ch)]
    else:
        layers = [conv1x1(in_ch, out_ch, stride)]
    if norm:
        layers.append(nn.BatchNorm2d(out_ch))
    return nn.Sequential(*layers)


class Block(nn.Module):
    """What every block shares: ``expansion`` (output channels / planes) and its order."""

    expansion = 1
    preact = False  # True: BN-ReLU-conv in the branch, no ReLU after the addition

    def zero_init_last(self) -> None:
        """Zero the branch's last scale, so that the block starts as the identity (Goyal et al.)."""
        raise NotImplementedError


def _basic_only(groups: int, width_per_group: int) -> None:
    if groups != 1 or width_per_group != 64:
        raise ValueError(
            f"basic blocks take groups=1 and width_per_group=64; got groups={groups}, "
            f"width_per_group={width_per_group} (grouped and wide variants use bottlenecks)"
        )


def _bottleneck_width(planes: int, groups: int, width_per_group: int) -> int:
    # torchvision's rule: ResNeXt 32x4d has 32 groups of 4 channels at planes 64, wide_2 twice 64
    return int(planes * (width_per_group / 64.0)) * groups


class ResidualBlock(Block):
    """Basic block: conv3x3-BN-ReLU-conv3x3-BN, plus the identity, then ReLU.

    ``residual=False`` drops the skip connection, giving the "plain" network of the same depth and
    width that He et al. compare against.
    """

    expansion = 1

    def __init__(
        self,
        in_ch: int,
        planes: int,
        stride: int = 1,
        residual: bool = True,
        groups: int = 1,
        width_per_group: int = 64,
        avg_down: bool = False,
    ) -> None:
        super().__init__()
        _basic_only(groups, width_per_group)
        out_ch = planes * self.expansion
        self.residual = residual
        self.conv1 = conv3x3(in_ch, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample = shortcut(in_ch, out_ch, stride, residual, avg_down)

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if not self.residual:
            return F.relu(out)
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)  # ReLU after the addition keeps the skip path clean


class BottleneckBlock(Block):
    """Bottleneck: conv1x1-BN-ReLU, conv3x3-BN-ReLU, conv1x1-BN (x4 channels), plus the identity, ReLU.

    The stride sits on the 3x3 convolution, not the first 1x1 as in the paper: this is "ResNet v1.5",
    as in torchvision, slightly more accurate and 4.1 rather than 3.8 GMACs for ResNet-50. ``groups``
    splits the 3x3 into that many groups (ResNeXt's cardinality); ``width_per_group`` sets the inner
    width (128 for Wide ResNet-50-2: twice ResNet-50's 64 at the first stage).
    """

    expansion = 4

    def __init__(
        self,
        in_ch: int,
        planes: int,
        stride: int = 1,
        residual: bool = True,
        groups: int = 1,
        width_per_group: int = 64,
        avg_down: bool = False,
    ) -> None:
        super().__init__()
        width = _bottleneck_width(planes, groups, width_per_group)
        out_ch = planes * self.expansion
        self.residual = residual
        self.conv1 = conv1x1(in_ch, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride, groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, out_ch)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.downsample = shortcut(in_ch, out_ch, stride, residual, avg_down)

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if not self.residual:
            return F.relu(out)
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class PreActResidualBlock(Block):
    """Pre-activated basic block: BN-ReLU-conv3x3, BN-ReLU-conv3x3, plus the identity; no ReLU after.

    Where the shape changes, the first BN-ReLU feeds both the branch and the projection (a bare
    1x1 conv), as in He et al.'s code and timm's ResNetV2; elsewhere the identity is the raw input.
    """

    expansion = 1
    preact = True

    def __init__(
        self,
        in_ch: int,
        planes: int,
        stride: int = 1,
        residual: bool = True,
        groups: int = 1,
        width_per_group: int = 64,
        avg_down: bool = False,
    ) -> None:
        super().__init__()
        _basic_only(groups, width_per_group)
        out_ch = planes * self.expansion
        self.residual = residual
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = conv3x3(in_ch, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, out_ch)
        self.downsample = shortcut(in_ch, out_ch, stride, residual, avg_down, norm=False)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv2.weight)  # no BN ends the branch; timm zeroes the last conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        identity = x if self.downsample is None else self.downsample(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        if not self.residual:
            return out
        return out + identity  # a clean addition: the identity path carries x unchanged


class PreActBottleneckBlock(Block):
    """Pre-activated bottleneck: BN-ReLU-conv1x1, BN-ReLU-conv3x3, BN-ReLU-conv1x1, plus the identity.

    The stride sits on the 3x3 (ResNet v1.5, as in timm's ResNetV2); He et al.'s code strides the
    first 1x1, which leaves parameters unchanged and costs fewer FLOPs. The projection, where the
    shape changes, takes the first BN-ReLU's output, as the branch does.
    """

    expansion = 4
    preact = True

    def __init__(
        self,
        in_ch: int,
        planes: int,
        stride: int = 1,
        residual: bool = True,
        groups: int = 1,
        width_per_group: int = 64,
        avg_down: bool = False,
    ) -> None:
        super().__init__()
        width = _bottleneck_width(planes, groups, width_per_group)
        out_ch = planes * self.expansion
        self.residual = residual
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = conv1x1(in_ch, width)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride, groups)
        self.bn3 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, out_ch)
        self.downsample = shortcut(in_ch, out_ch, stride, residual, avg_down, norm=False)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        identity = x if self.downsample is None else self.downsample(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        if not self.residual:
            return out
        return out + identity


_ORDERS: dict[type[Block], tuple[type[Block], type[Block]]] = {
    kind: pair
    for pair in ((ResidualBlock, PreActResidualBlock), (BottleneckBlock, PreActBottleneckBlock))
    for kind in pair
}


def in_order(block: type[Block], preact: bool) -> type[Block]:
    """The same kind of block (basic or bottleneck) in the original or the pre-activated order."""
    return _ORDERS[block][int(preact)]
