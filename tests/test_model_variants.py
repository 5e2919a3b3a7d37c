"""The variants as data: ResNeXt and Wide ResNet against torchvision, ResNet-D against timm's published
figures, the pre-activation ResNets' structure, and the registry round trip.

The large networks are built on the meta device wherever only their shapes or FLOPs are needed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from resbench import cli
from resbench.engine import flops
from resbench.models import (
    BottleneckBlock,
    PreActBottleneckBlock,
    PreActResidualBlock,
    ResidualBlock,
    ResNet,
    SmallResNet,
    build_model,
    default_image_size,
    list_models,
    model_family,
)
from resbench.models.registry import spec

# torchvision's published figures (its weights' meta: num_params, and _ops in GMACs at 224)
TORCHVISION = {
    "resnext50_32x4d": (25_028_904, 4.23),
    "resnext101_32x8d": (88_791_336, 16.41),
    "resnext101_64x4d": (83_455_272, 15.46),
    "wide_resnet50_2": (68_883_240, 11.40),
    "wide_resnet101_2": (126_886_696, 22.75),
}
# timm's published figures for its ResNet-D (millions of parameters, GMACs at 224)
TIMM = {"resnet50d": (25.58, 4.35), "resnet18d": (11.71, 2.06)}
KEYS = json.loads((Path(__file__).parent / "fixtures" / "state_dict_keys.json").read_text())


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def meta(name: str, **kwargs) -> ResNet:
    with torch.device("meta"):
        return build_model(name, **kwargs)


def perturb_bn(model: nn.Module) -> None:
    """Random BN statistics and scales, so that eval-mode BN is not the identity."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_torchvision_variants_have_our_key_names_shapes_and_counts(name):
    with torch.device("meta"):
        reference = getattr(torchvision.models, name)(weights=None)
    ours = meta(name)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [
        (k, v.shape) for k, v in reference.state_dict().items()
    ]
    ours.load_state_dict(reference.state_dict(), strict=True, assign=True)
    assert n_params(ours) == n_params(reference) == TORCHVISION[name][0]


@pytest.mark.parametrize("name", ["resnext50_32x4d", "wide_resnet50_2"])  # grouped, wide
def test_torchvision_variants_load_strictly_and_agree(name):
    reference = getattr(torchvision.models, name)(weights=None).eval()
    perturb_bn(reference)
    ours = meta(name)
    ours.load_state_dict(reference.state_dict(), strict=True, assign=True)
    ours.eval()
    x = torch.randn(1, 3, 64, 64)  # every layer at a fraction of 224's cost
    with torch.no_grad():
        expected, got = reference(x), ours(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_torchvision_variants_gmacs_match_published(name):
    gmacs = flops.count_flops(name, 224).gflops / 2
    assert gmacs == pytest.approx(TORCHVISION[name][1], rel=0.01)


@pytest.mark.parametrize("name", sorted(TIMM))
def test_resnet_d_matches_timms_published_figures(name):
    params_m, gmacs = TIMM[name]
    assert round(flops.count_params(name) / 1e6, 2) == params_m
    assert flops.count_flops(name, 224).gflops / 2 == pytest.approx(gmacs, rel=0.01)


def test_resnet_d_has_a_deep_stem_and_average_pool_shortcuts():
    model = meta("resnet50d")
    convs = [m for m in model.conv1 if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (32, (3, 3), (2, 2)),
        (32, (3, 3), (1, 1)),
        (64, (3, 3), (1, 1)),
    ]
    assert model.bn1.num_features == 64 and isinstance(model.maxpool, nn.MaxPool2d)
    # timm's names: the pool (an Identity where nothing strides), the 1x1 conv, the BN
    assert isinstance(model.layer1[0].downsample[0], nn.Identity)
    pool, conv, bn = model.layer2[0].downsample
    assert isinstance(pool, nn.AvgPool2d) and (pool.kernel_size, pool.stride) == (2, 2)
    assert pool.ceil_mode and not pool.count_include_pad
    assert conv.kernel_size == (1, 1) and conv.stride == (1, 1) and isinstance(bn, nn.BatchNorm2d)
    assert model.layer2[0].conv2.stride == (2, 2)  # the branch still strides on its 3x3
    assert meta("resnet18d").layer1[0].downsample is None


def test_average_pool_shortcut_sees_every_pixel():
    block = BottleneckBlock(64, 32, stride=2, avg_down=True).eval()
    perturb_bn(block)
    _, conv, bn = block.downsample
    x = torch.randn(2, 64, 7, 7)  # odd: ceil_mode keeps the shortcut the branch's 4x4
    with torch.no_grad():
        pooled = F.avg_pool2d(x, 2, 2, ceil_mode=True, count_include_pad=False)
        expected = F.batch_norm(F.conv2d(pooled, conv.weight), bn.running_mean, bn.running_var,
                                bn.weight, bn.bias)  # fmt: skip
        torch.testing.assert_close(block.downsample(x), expected)
        assert block(x).shape == (2, 128, 4, 4)
    # a strided 1x1 conv reads one pixel in four; the pooled shortcut changes with all four
    plain = BottleneckBlock(64, 32, stride=2).eval()
    y = x.clone()
    y[..., 1, 1] += 1.0
    with torch.no_grad():
        assert not torch.equal(block.downsample(x), block.downsample(y))
        torch.testing.assert_close(plain.downsample(x), plain.downsample(y))


def test_preact_addition_has_no_relu_after_it():
    for block in (PreActResidualBlock(16, 16), PreActBottleneckBlock(64, 16)):
        block.zero_init_last()
        x = torch.randn(2, block.bn1.num_features, 8, 8)
        # the branch is zero, so the output is x itself, negative values included
        torch.testing.assert_close(block.eval()(x), x)
    original = ResidualBlock(16, 16)
    original.zero_init_last()
    x = torch.randn(2, 16, 8, 8)
    torch.testing.assert_close(original.eval()(x), torch.relu(x))


@pytest.mark.parametrize(
    "block", [PreActResidualBlock(16, 32, 2), PreActBottleneckBlock(64, 32, 2)]
)
def test_preact_first_bn_relu_feeds_branch_and_projection(block):
    block.eval()
    perturb_bn(block)
    assert [type(m) for m in block.downsample] == [nn.Conv2d]  # a bare 1x1 conv, no BN after it
    seen = {}
    block.conv1.register_forward_hook(lambda m, args, out: seen.update(branch=args[0]))
    block.downsample.register_forward_hook(lambda m, args, out: seen.update(shortcut=args[0]))
    x = torch.randn(2, block.bn1.num_features, 8, 8)
    with torch.no_grad():
        block(x)
        activated = torch.relu(block.bn1(x))
    torch.testing.assert_close(seen["branch"], activated)
    torch.testing.assert_close(seen["shortcut"], activated)
    # where the shape stays, the identity is the raw input
    same = PreActResidualBlock(32, 32).eval()
    same.zero_init_last()
    x = torch.randn(2, 32, 4, 4)
    torch.testing.assert_close(same(x), x)


@pytest.mark.parametrize("name", ["preact_resnet20", "preact_resnet18"])
def test_preact_network_ends_in_bn_relu_before_pooling(name):
    model = build_model(name).eval()
    perturb_bn(model)
    assert not hasattr(model, "bn1")  # the stem ends in its conv: the first block activates it
    assert all(type(b).preact for b in model.blocks())
    seen = {}
    last = getattr(model, model.layer_names[-1])
    last.register_forward_hook(lambda m, args, out: seen.update(sum=out))
    model.avgpool.register_forward_hook(lambda m, args, out: seen.update(pooled=args[0]))
    size = 32 if model_family(name) == "cifar" else 64
    with torch.no_grad():
        model(torch.randn(2, 3, size, size))
        torch.testing.assert_close(seen["pooled"], torch.relu(model.final_bn(seen["sum"])))
    assert (seen["sum"] < 0).any()  # the last addition itself is not rectified


@pytest.mark.parametrize(
    "name, n, block", [("preact_resnet164", 18, PreActBottleneckBlock),
                       ("preact_resnet1001", 111, PreActBottleneckBlock),
                       ("preact_resnet110", 18, PreActResidualBlock)],
)  # fmt: skip
def test_preact_cifar_depths_and_widths(name, n, block):
    model = meta(name)
    assert isinstance(model, SmallResNet)
    assert [len(getattr(model, s)) for s in model.layer_names] == [n, n, n]
    assert all(type(b) is block for b in model.blocks())
    convs = [
        m for k, m in model.named_modules() if isinstance(m, nn.Conv2d) and "downsample" not in k
    ]
    per_block = 3 if block is PreActBottleneckBlock else 2
    assert len(convs) + 1 == per_block * 3 * n + 2  # 9n+2 (bottleneck) or 6n+2, with stem and fc
    assert model.conv1.out_channels == 16
    outputs = [getattr(model, s)[-1].conv2.out_channels if per_block == 2
               else getattr(model, s)[-1].conv3.out_channels for s in model.layer_names]  # fmt: skip
    assert outputs == ([64, 128, 256] if per_block == 3 else [16, 32, 64])


def test_preact_cifar_parameters_match_the_paper():
    # He et al. 2016, table 2: pre-act ResNet-164 1.7M, ResNet-1001 10.2M (rounded)
    assert flops.count_params("preact_resnet164") == pytest.approx(1.7e6, rel=0.02)
    assert flops.count_params("preact_resnet1001") == pytest.approx(10.2e6, rel=0.02)


def test_the_order_is_an_argument():
    # the same entry in the other order is the other network: keys and shapes agree exactly
    def shapes(model):
        return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]

    assert shapes(meta("preact_resnet20", preact=False)) == shapes(meta("small_resnet20"))
    assert shapes(meta("small_resnet20", preact=True)) == shapes(meta("preact_resnet20"))
    assert shapes(meta("resnet50", preact=True)) == shapes(meta("preact_resnet50"))
    original = meta("preact_resnet164", preact=False)
    assert all(type(b) is BottleneckBlock for b in original.blocks()) and hasattr(original, "bn1")


def test_state_dicts_saved_before_the_split_still_load():
    # keys and shapes of today's seed models, captured from the single-file models.py
    for name in ("small_resnet18", "small_resnet20"):
        got = [[k, list(v.shape)] for k, v in meta(name).state_dict().items()]
        assert got == KEYS[name]
        state = {k: torch.zeros(shape) for k, shape in KEYS[name]}
        build_model(name).load_state_dict(state, strict=True)
    for name in ("resnet18", "resnet50"):
        with torch.device("meta"):
            reference = getattr(torchvision.models, name)()
        assert list(meta(name).state_dict()) == list(reference.state_dict())


def test_preact_zero_init_starts_every_block_as_the_identity():
    model = build_model("preact_resnet20", zero_init_residual=True).eval()
    assert all(torch.all(b.conv2.weight == 0) for b in model.blocks())
    seen = {}
    model.layer1.register_forward_hook(lambda m, args, out: seen.update(i=args[0], o=out))
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    torch.testing.assert_close(seen["o"], seen["i"])


@pytest.mark.parametrize(
    "model",
    [lambda: build_model("preact_resnet20"),
     lambda: SmallResNet(BottleneckBlock, (2, 2, 2), preact=True)],  # preact_resnet164's units
    ids=["basic", "bottleneck"],
)  # fmt: skip
def test_preact_gradients_are_finite_and_nonzero(model):
    model = model().train()
    out = model(torch.randn(2, 3, 32, 32))
    F.cross_entropy(out, torch.randint(0, 10, (2,))).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


def test_grouped_and_wide_bottlenecks():
    block = meta("resnext50_32x4d").layer1[0]
    assert (block.conv2.groups, block.conv2.in_channels, block.conv3.out_channels) == (32, 128, 256)
    wide = meta("wide_resnet50_2").layer1[0]
    assert (wide.conv2.groups, wide.conv2.in_channels, wide.conv3.out_channels) == (1, 128, 256)
    with pytest.raises(ValueError, match="basic blocks take groups=1"):
        build_model("resnet18", groups=32)
    with pytest.raises(ValueError, match="unknown stem 'big'"):
        build_model("resnet18", stem="big")


@pytest.mark.parametrize("name", list_models())
def test_registry_round_trip(name):
    entry = spec(name)
    family = model_family(name)
    model = meta(name)
    assert isinstance(model, SmallResNet) == (family == "cifar")
    assert [len(getattr(model, s)) for s in model.layer_names] == list(entry.layers)
    blocks = model.blocks()
    assert all(type(b).preact == entry.preact for b in blocks)
    assert all(type(b).expansion == entry.block.expansion for b in blocks)
    assert model.fc.out_features == (10 if family == "cifar" else 1000)
    assert cli.parse_models(name) == [name]
    size = default_image_size(name)
    assert size == (32 if family == "cifar" else 224)
    assert cli.min_image_size(name) == model.downsampling == (4 if family == "cifar" else 32)
    assert flops.count_params(name) == n_params(model)
