from __future__ import annotations

import pytest
import torch

from resbench.flops import count_flops, measure_peak_tflops

# torchvision's published `_ops` (GMACs) at 224x224; a multiply-add is 2 FLOPs here
PUBLISHED_GMACS = {
    "resnet18": 1.81,
    "resnet34": 3.66,
    "resnet50": 4.09,
    "resnet101": 7.8,
    "resnet152": 11.51,
}


@pytest.mark.parametrize("name", PUBLISHED_GMACS)
def test_forward_flops_match_published_figures(name):
    gflops = count_flops(name, 224).gflops
    assert gflops == pytest.approx(2 * PUBLISHED_GMACS[name], rel=0.01)


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "small_resnet20"])
def test_train_step_is_about_three_forwards(name):
    size = 32 if name.startswith("small") else 224
    ratio = count_flops(name, size, "train").total / count_flops(name, size).total
    assert 2.5 <= ratio <= 3.5


def test_stage_breakdown_covers_the_total():
    count = count_flops("resnet50", 224)
    assert list(count.by_stage) == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
    assert sum(count.by_stage.values()) == count.total
    assert all(v > 0 for v in count.by_stage.values())
    small = count_flops("small_resnet20", 32)
    assert list(small.by_stage) == ["stem", "layer1", "layer2", "layer3", "head"]
    assert sum(small.by_stage.values()) == small.total


def test_flops_scale_with_image_size():
    assert count_flops("resnet18", 448).total == pytest.approx(
        4 * count_flops("resnet18", 224).total, rel=0.01
    )


def test_counting_is_cached():
    assert count_flops("resnet34", 224) is count_flops("resnet34", 224)


def test_peak_probe_is_positive_and_cached():
    peak = measure_peak_tflops("cpu", "fp32", budget_s=0.3)
    assert peak > 0
    assert measure_peak_tflops("cpu", "fp32", budget_s=0.3) == peak
    with pytest.raises(ValueError, match="precision"):
        measure_peak_tflops("cpu", "fp8")


def test_flop_counting_does_not_touch_real_memory():
    # counting on the meta device: ResNet-152 at a huge image size costs no memory
    before = torch.randn(1).device
    assert count_flops("resnet152", 1024).gflops > 300
    assert before.type == "cpu"
