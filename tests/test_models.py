from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torch import nn

from resbench import weights
from resbench.models import (
    BottleneckBlock,
    ResidualBlock,
    ResNet,
    SmallResNet,
    build_model,
    list_models,
)

IMAGENET = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
CIFAR = [
    "small_resnet18",
    "small_resnet20",
    "small_resnet32",
    "small_resnet44",
    "small_resnet56",
    "small_resnet110",
]
# torchvision's published parameter counts
TORCHVISION_PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# the variants added after the seed's (tests/test_model_variants.py covers them)
NEW_IMAGENET = [
    "resnext50_32x4d",
    "resnext101_32x8d",
    "resnext101_64x4d",
    "wide_resnet50_2",
    "wide_resnet101_2",
    "resnet18d",
    "resnet50d",
    "preact_resnet18",
    "preact_resnet50",
]
PREACT_CIFAR = [f"preact_resnet{d}" for d in (20, 32, 44, 56, 110, 164, 1001)]


def test_registry_names():
    assert list_models() == IMAGENET + NEW_IMAGENET + CIFAR + PREACT_CIFAR
    assert list_models("imagenet") == IMAGENET + NEW_IMAGENET
    assert list_models("cifar") == CIFAR + PREACT_CIFAR


def on_meta(build):
    """Built on the meta device: names, shapes and counts without memory or initialisation."""
    with torch.device("meta"):
        return build()


@pytest.mark.parametrize("name", IMAGENET)
def test_parameter_counts_match_torchvision(name):
    assert n_params(on_meta(lambda: build_model(name))) == TORCHVISION_PARAMS[name]


@pytest.mark.parametrize("name", IMAGENET)
def test_torchvision_state_dict_has_our_key_names_and_shapes(name):
    # every depth's layout, cheaply; the numbers through the loader are checked on one network
    # per block type below
    reference = on_meta(lambda: getattr(torchvision.models, name)(weights=None)).state_dict()
    ours = on_meta(lambda: build_model(name)).state_dict()
    assert [(k, v.shape) for k, v in ours.items()] == [(k, v.shape) for k, v in reference.items()]
    on_meta(lambda: build_model(name)).load_state_dict(reference, strict=True, assign=True)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])  # basic blocks, bottlenecks
def test_torchvision_state_dict_loads_and_agrees(name, tmp_path):
    reference = getattr(torchvision.models, name)(weights=None).eval()
    # perturb BN running stats so that eval-mode BN is not the identity and must be loaded right
    with torch.no_grad():
        for m in reference.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    path = tmp_path / f"{name}.pth"
    torch.save(reference.state_dict(), path)
    ours = weights.load_into(build_model(name), weights.read(path)).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        expected, got = reference(x), ours(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


def test_load_rejects_a_mismatched_state_dict(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match=r"does not fit this model: the file lacks 198 of "):
        weights.load_into(build_model("resnet50"), weights.read(path))


@pytest.mark.parametrize("name", IMAGENET + CIFAR)
def test_output_shape(name):
    model = build_model(name).eval()
    size, n = (32, 2) if name.startswith("small") else (224, 1)  # one 224px image is enough
    with torch.no_grad():
        out = model(torch.randn(n, 3, size, size))
    assert out.shape == (n, 1000 if name in IMAGENET else 10)


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "small_resnet20"])
def test_in_channels_and_num_classes(name):
    model = build_model(name, in_channels=1, num_classes=7).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 64, 64))
    assert out.shape == (2, 7)


@pytest.mark.parametrize("size", [32, 48, 97])
def test_any_input_size_the_stem_allows(size):
    with torch.no_grad():
        assert build_model("resnet18").eval()(torch.randn(1, 3, size, size)).shape == (1, 1000)
        assert build_model("small_resnet20").eval()(torch.randn(1, 3, size, size)).shape == (1, 10)


def test_he_initialisation_statistics():
    model = build_model("resnet50")
    checked = 0
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.weight.numel() >= 100_000:
            fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1]
            expected = math.sqrt(2.0 / fan_out)
            assert m.weight.std().item() == pytest.approx(expected, rel=0.05)
            assert abs(m.weight.mean().item()) < 0.05 * expected
            checked += 1
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
    assert checked > 10


def test_zero_init_residual_zeroes_each_blocks_last_bn():
    model = build_model("resnet50", zero_init_residual=True)
    blocks = model.blocks()
    assert len(blocks) == 16
    for b in blocks:
        assert torch.all(b.bn3.weight == 0)
        assert torch.all(b.bn1.weight == 1)
    small = build_model("small_resnet20", zero_init_residual=True)
    assert all(torch.all(b.bn2.weight == 0) for b in small.blocks())


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "small_resnet18", "small_resnet20"])
def test_gradients_are_finite_and_nonzero(name):
    model = build_model(name).train()
    size = 32 if name.startswith("small") else 64
    out = model(torch.randn(4, 3, size, size))
    nn.functional.cross_entropy(out, torch.randint(0, out.shape[1], (4,))).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


def test_blocks_follow_the_paper():
    basic = ResidualBlock(64, 64)
    assert basic.downsample is None and ResidualBlock.expansion == 1
    down = ResidualBlock(64, 128, stride=2)
    assert isinstance(down.downsample[0], nn.Conv2d) and down.downsample[0].kernel_size == (1, 1)
    assert isinstance(down.downsample[1], nn.BatchNorm2d)
    bottleneck = BottleneckBlock(256, 128, stride=2)
    assert BottleneckBlock.expansion == 4
    assert [
        bottleneck.bn1.num_features,
        bottleneck.bn2.num_features,
        bottleneck.bn3.num_features,
    ] == [
        128,
        128,
        512,
    ]
    assert bottleneck.conv2.stride == (2, 2)  # ResNet v1.5: the stride is on the 3x3
    # the block's output is ReLU(F(x) + x): with F zeroed, it is ReLU(x)
    with torch.no_grad():
        basic.bn2.weight.zero_()
        basic.bn2.bias.zero_()
    x = torch.randn(2, 64, 8, 8)
    torch.testing.assert_close(basic.eval()(x), torch.relu(x))


def test_stems_and_stages():
    imagenet = build_model("resnet18")
    assert imagenet.conv1.kernel_size == (7, 7) and imagenet.conv1.stride == (2, 2)
    assert isinstance(imagenet.maxpool, nn.MaxPool2d)
    assert imagenet.fc.in_features == 512
    small = build_model("small_resnet20")
    assert isinstance(small, SmallResNet) and not hasattr(small, "maxpool")
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert [len(small.layer1), len(small.layer2), len(small.layer3)] == [3, 3, 3]
    assert small.fc.in_features == 64
    assert build_model("small_resnet20", initial_channels=32).fc.in_features == 128
    assert isinstance(build_model("resnet34"), ResNet)


def test_small_resnet_depths():
    # depth 6n + 2: n blocks per stage, two convolutions each, plus stem and fc
    for name, n in [("small_resnet20", 3), ("small_resnet56", 9), ("small_resnet110", 18)]:
        model = build_model(name)
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
        assert len(convs) + 1 == 6 * n + 2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_classes": 0}, "num_classes"),
        ({"num_classes": -3}, "num_classes"),
        ({"in_channels": 0}, "in_channels"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, message):
    for name in ("resnet18", "small_resnet20"):
        with pytest.raises(ValueError, match=message):
            build_model(name, **kwargs)


def test_unknown_model_lists_every_name():
    with pytest.raises(ValueError) as info:
        build_model("resnet19")
    for name in list_models():
        assert name in str(info.value)
