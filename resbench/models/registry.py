"""Every named variant is one entry: its block, its stages, and how it departs from the plain ResNet.

Adding a variant is one ``Spec`` here (and its test): ``build_model(name, **overrides)`` builds it,
``list_models`` and ``model_family`` list it for every tool. Usage::

    from resbench.models import build_model, list_models
    model = build_model("resnext50_32x4d")          # 1000 classes, ImageNet stem
    twin = build_model("preact_resnet110", preact=False)   # the same network in the original order
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from torch import nn

from resbench.models.blocks import Block, BottleneckBlock, ResidualBlock
from resbench.models.networks import ResNet, SmallResNet

FAMILIES = ("imagenet", "cifar")
_IMAGE_SIZE = {"imagenet": 224, "cifar": 32}


@dataclass(frozen=True)
class Spec:
    """A variant as data; every field but the first two says how it departs from ResNet's defaults."""

    block: type[Block]
    layers: tuple[int, ...]
    small: bool = (
        False  # CIFAR-style SmallResNet (32x32 input, 10 classes) instead of ImageNet ResNet
    )
    groups: int = 1  # ResNeXt's cardinality: groups in each bottleneck's 3x3
    width_per_group: int = 64  # channels per group at the first stage (128: Wide ResNet-2)
    stem: str = "7x7"  # or "deep" (three 3x3 convs, ResNet-C/D); SmallResNet has its own
    stem_width: int = 64
    avg_down: bool = False  # average-pool then 1x1 conv on striding shortcuts (ResNet-D)
    preact: bool = False  # pre-activated blocks (He et al. 2016)

    @property
    def family(self) -> str:
        return "cifar" if self.small else "imagenet"

    def options(self) -> dict:
        """The network's keyword arguments where they differ from its defaults."""
        skip = ("block", "layers", "small")
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in skip and getattr(self, f.name) != f.default
        }


# blocks per stage (ResNet-34 and ResNet-50 share theirs: basic blocks against bottlenecks)
_R18, _R34, _R50, _R101 = (2, 2, 2, 2), (3, 4, 6, 3), (3, 4, 6, 3), (3, 4, 23, 3)


def _cifar(block: type[Block], n: int, **options) -> Spec:
    return Spec(block, (n, n, n), small=True, **options)


_SPECS: dict[str, Spec] = {
    "resnet18": Spec(ResidualBlock, _R18),
    "resnet34": Spec(ResidualBlock, _R34),
    "resnet50": Spec(BottleneckBlock, _R50),
    "resnet101": Spec(BottleneckBlock, _R101),
    "resnet152": Spec(BottleneckBlock, (3, 8, 36, 3)),
    # torchvision's other five: ResNeXt (Xie et al. 2017) and Wide ResNet (Zagoruyko & Komodakis)
    "resnext50_32x4d": Spec(BottleneckBlock, _R50, groups=32, width_per_group=4),
    "resnext101_32x8d": Spec(BottleneckBlock, _R101, groups=32, width_per_group=8),
    "resnext101_64x4d": Spec(BottleneckBlock, _R101, groups=64, width_per_group=4),
    "wide_resnet50_2": Spec(BottleneckBlock, _R50, width_per_group=128),
    "wide_resnet101_2": Spec(BottleneckBlock, _R101, width_per_group=128),
    # ResNet-D (He et al. 2019, "Bag of Tricks"), as timm defines it: deep stem 32, 32, 64
    "resnet18d": Spec(ResidualBlock, _R18, stem="deep", avg_down=True),
    "resnet50d": Spec(BottleneckBlock, _R50, stem="deep", avg_down=True),
    # pre-activation ResNets on ImageNet (He et al. 2016; timm's ResNetV2 layout)
    "preact_resnet18": Spec(ResidualBlock, _R18, preact=True),
    "preact_resnet50": Spec(BottleneckBlock, _R50, preact=True),
    # the tutorial's SmallResNet18: two basic blocks per stage, three stages
    "small_resnet18": _cifar(ResidualBlock, 2),
    # He et al.'s CIFAR networks: depth 6n+2
    "small_resnet20": _cifar(ResidualBlock, 3),
    "small_resnet32": _cifar(ResidualBlock, 5),
    "small_resnet44": _cifar(ResidualBlock, 7),
    "small_resnet56": _cifar(ResidualBlock, 9),
    "small_resnet110": _cifar(ResidualBlock, 18),
    # the same, pre-activated; then He et al. 2016's bottleneck networks, depth 9n+2, 16/64/128/256
    "preact_resnet20": _cifar(ResidualBlock, 3, preact=True),
    "preact_resnet32": _cifar(ResidualBlock, 5, preact=True),
    "preact_resnet44": _cifar(ResidualBlock, 7, preact=True),
    "preact_resnet56": _cifar(ResidualBlock, 9, preact=True),
    "preact_resnet110": _cifar(ResidualBlock, 18, preact=True),
    "preact_resnet164": _cifar(BottleneckBlock, 18, preact=True),
    "preact_resnet1001": _cifar(BottleneckBlock, 111, preact=True),
}


def list_models(family: str = "all") -> list[str]:
    """Registry names; ``family`` is "all", "imagenet" or "cifar"."""
    if family not in ("all", *FAMILIES):
        raise ValueError(f"unknown model family {family!r}; choose one of: all, imagenet, cifar")
    return [name for name, spec in _SPECS.items() if family in ("all", spec.family)]


def spec(name: str) -> Spec:
    """The registry entry of ``name``; a ValueError lists every name if it is unknown."""
    try:
        return _SPECS[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; choose one of: {', '.join(list_models())}"
        ) from None


def model_family(name: str) -> str:
    """ "cifar" for the SmallResNet variants, "imagenet" for the others."""
    return spec(name).family


def default_image_size(name: str) -> int:
    """224 for the ImageNet variants, 32 for the CIFAR family."""
    return _IMAGE_SIZE[spec(name).family]


def build_model(name: str, **kwargs) -> ResNet:
    """Build a registry variant; kwargs (num_classes, in_channels, residual, preact, ...) override
    the entry's."""
    entry = spec(name)
    cls = SmallResNet if entry.small else ResNet
    return cls(entry.block, entry.layers, **(entry.options() | kwargs))


def input_channels(model: ResNet) -> int:
    """The channels of the images ``model`` takes: its first convolution's (3 unless built with
    ``in_channels``)."""
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels
