from __future__ import annotations

import pytest
import torch

from resbench.engine.flops import count_flops
from resbench.engine.probes import measure_peak, measure_peak_tflops

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


@pytest.mark.parametrize(
    "name", ["resnet18", "resnet50", "small_resnet20", "resnext50_32x4d", "preact_resnet164"]
)
def test_train_step_is_about_three_forwards(name):
    # grouped convolutions too: torch 2.14's formula counted their weight gradient `groups` times
    size = 224 if name.startswith("res") else 32
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
    deep = count_flops("resnet50d", 224)  # the deep stem's three convolutions are the stem's
    assert (
        deep.by_stage["stem"] > count.by_stage["stem"] and sum(deep.by_stage.values()) == deep.total
    )


def test_flops_scale_with_image_size():
    assert count_flops("resnet18", 448).total == pytest.approx(
        4 * count_flops("resnet18", 224).total, rel=0.01
    )
    # ResNet strikes back evaluates at 288: (288/224)^2 = 1.65x the convolutions' work
    assert count_flops("resnet50d", 288).total == pytest.approx(
        (288 / 224) ** 2 * count_flops("resnet50d", 224).total, rel=0.02
    )


def test_counting_is_cached():
    assert count_flops("resnet34", 224) is count_flops("resnet34", 224)


def test_peak_probe_is_the_fastest_probe_named_and_cached():
    peak = measure_peak("cpu", "fp32", budget_s=0.1)
    rates = dict(peak.rates)
    assert peak.tflops > 0 and peak.tflops == max(rates.values()) == rates[peak.probe]
    # several matmul shapes and a 3x3 convolution in both layouts, each timed
    assert sum(name.startswith("mm ") for name in rates) == 3
    assert {n.startswith("conv3x3 oneDNN") and n.endswith(" cl") for n in rates} == {True, False}
    assert measure_peak("cpu", "fp32", budget_s=0.1) is peak
    assert measure_peak_tflops("cpu", "fp32", budget_s=0.1) == peak.tflops
    with pytest.raises(ValueError, match="precision"):
        measure_peak_tflops("cpu", "fp8")


@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
def test_the_cuda_peak_is_the_fastest_of_cublas_and_cudnn_with_the_rows_switches(precision):
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    peak = measure_peak("cuda", precision, budget_s=0.3)
    rates = dict(peak.rates)
    assert sum(name.startswith("mm cuBLAS") for name in rates) == 3
    assert sum(name.startswith("conv3x3 cuDNN") for name in rates) == 2
    assert peak.tflops == max(rates.values()) > 0
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == saved


def test_every_probe_counts_its_flops_as_the_rows_are_counted():
    # a probe's rate is nominal FLOPs over time, as a row's is: FlopCounterMode must agree
    from torch.utils.flop_counter import FlopCounterMode

    from resbench.engine import probes

    cpu = torch.device("cpu")
    for family, ladders in probes.PROBE_FAMILIES:
        members = family(cpu, torch.float32, ladders["cpu"][0])
        assert len(members) >= 2
        for name, probe in members.items():
            count, fn = probe()
            with FlopCounterMode(display=False) as counter:
                fn()
            assert counter.get_total_flops() == count, name


def test_the_peak_is_the_fastest_of_every_family_and_says_which(monkeypatch):
    # a convolution that beats every matmul (oneDNN's 3x3 kernels beat a 2048^3 product on an
    # EPYC, so ONNX Runtime and OpenVINO rows read 101-108% MFU against the matmul alone)
    from resbench.engine import probes

    clock = [0.0]

    def family(rates: dict[str, float]):
        def members(device, dtype, size):
            def probe(rate):
                def build():
                    return 10**12, lambda: clock.__setitem__(0, clock[0] + 1 / rate)

                return build

            return {name: probe(rate) for name, rate in rates.items()}

        return members

    matmuls = family({"mm fake 8x8x8": 2.0, "mm fake 32x4x4": 3.0})
    convs = family({"conv3x3 fake 1x8x4x4": 4.0, "conv3x3 fake 1x8x4x4 cl": 5.0})
    sizes = {"cpu": (1,), "other": (1,)}
    monkeypatch.setattr(probes, "PROBE_FAMILIES", ((matmuls, sizes), (convs, sizes)))
    _fake_clock(monkeypatch, clock)
    peak = probes._peak.__wrapped__("cpu", "fp32", 0.05)
    assert peak.probe == "conv3x3 fake 1x8x4x4 cl" and peak.tflops == pytest.approx(5.0)
    assert len(peak.rates) == 4


def test_a_row_that_beats_its_peak_has_no_mfu_but_the_flag():
    from resbench.engine.probes import mfu_fields

    assert mfu_fields(0.21, 0.2) == {"mfu": None, "peak_exceeded": True}
    assert mfu_fields(0.1, 0.2) == {"mfu": 0.5, "peak_exceeded": False}
    assert mfu_fields(0.1, None) == {"mfu": None, "peak_exceeded": None}


def test_flop_counting_does_not_touch_real_memory():
    # counting on the meta device: ResNet-152 at a huge image size costs no memory
    before = torch.randn(1).device
    assert count_flops("resnet152", 1024).gflops > 300
    assert before.type == "cpu"


def test_bytes_are_every_operators_inputs_and_outputs():
    # one 1x1 convolution's traffic by hand: input + weight + output, nothing per layer in flops.py
    from resbench.engine.flops import ByteCounter

    with torch.device("meta"):
        x = torch.randn(2, 8, 4, 4)
        w = torch.randn(16, 8, 1, 1)
    with ByteCounter() as counter:
        torch.nn.functional.conv2d(x, w)
    elements = 2 * 8 * 16 + 16 * 8 + 2 * 16 * 16
    assert counter.bytes_in(torch.float32) == 4 * elements
    assert counter.bytes_in(torch.bfloat16) == 2 * elements  # the same pass, counted in bf16
    with ByteCounter() as counter:  # integer tensors keep their own size (zeros out, add in+out)
        torch.zeros(3, dtype=torch.long, device="meta").add(1)
    assert counter.floating == 0 and counter.bytes_in(torch.bfloat16) == 3 * (3 * 8)  # zeros, add


def test_byte_count_splits_weights_from_per_image_traffic():
    from resbench.engine.flops import count_bytes

    traffic = count_bytes("resnet50", 224)
    weights = 4 * sum(p.numel() for p in torch.nn.Module.parameters(_meta("resnet50")))
    assert weights <= traffic.fixed <= 2 * weights  # each weight is read once, plus BN buffers
    assert traffic.bytes_per_step(8) == traffic.fixed + 8 * traffic.per_image
    assert count_bytes("resnet50", 224, precision="bf16").per_image < traffic.per_image
    assert count_bytes("resnet50", 224, "train").per_image > 2 * traffic.per_image
    with pytest.raises(ValueError, match="precision"):
        count_bytes("resnet50", 224, precision="int8")


def _meta(name):
    from resbench.models import build_model

    with torch.device("meta"):
        return build_model(name)


def test_bandwidth_probe_is_positive_and_cached():
    from resbench.engine.probes import measure_bandwidth_gbs

    gbs = measure_bandwidth_gbs("cpu", budget_s=0.2)
    assert gbs > 0 and measure_bandwidth_gbs("cpu", budget_s=0.2) == gbs


def _fake_clock(monkeypatch, clock: list[float]) -> None:
    """time.perf_counter(_ns) read a clock that only the fake products advance."""
    import time

    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(time, "perf_counter_ns", lambda: int(clock[0] * 1e9))


def _fake_family(built: list, cost_of):
    """One probe per size whose call advances the fake clock by ``cost_of(size)``."""
    clock = [0.0]

    def members(device, dtype, n):
        def build():
            built.append(n)
            cost = cost_of(n)
            return 2 * n**3, lambda: clock.__setitem__(0, clock[0] + cost)

        return {f"mm fake {n}": build}

    return members, clock


def test_the_peak_probe_stops_growing_when_a_product_is_slow(monkeypatch):
    # an emulated bf16 product: ~56 s at 2048^3 on an AVX2-only CPU, so ~0.11 s at 256^3; the
    # probe must settle at the smallest size instead of running 2048^3 for minutes
    from resbench.engine import probes

    built: list = []
    family, clock = _fake_family(built, lambda n: 0.11 * (n / 256) ** 3)
    monkeypatch.setattr(probes, "PROBE_FAMILIES", ((family, probes.PROBE_SIZES),))
    _fake_clock(monkeypatch, clock)
    peak = probes._peak.__wrapped__("cpu", "bf16", 0.3)
    assert max(built) == 256  # never a larger product
    assert peak.tflops == pytest.approx(2 * 256**3 / 0.11 / 1e12, rel=0.01)
    assert peak.probe == "mm fake 256"


def test_the_peak_probe_grows_to_the_largest_size_when_products_are_fast(monkeypatch):
    from resbench.engine import probes

    built: list = []
    # 2048^3 in ~0.8 ms: a fast accelerator
    family, clock = _fake_family(built, lambda n: 1e-4 * (n / 256) ** 3 / 64)
    monkeypatch.setattr(probes, "PROBE_FAMILIES", ((family, probes.PROBE_SIZES),))
    _fake_clock(monkeypatch, clock)
    probes._peak.__wrapped__("cpu", "fp32", 0.05)
    assert max(built) == probes.PROBE_SIZES["cpu"][-1]


def test_the_peak_probe_keeps_the_last_size_that_fits_in_memory(monkeypatch):
    from resbench.engine import probes

    built: list = []
    family, clock = _fake_family(built, lambda n: 1e-6 * (n / 256) ** 3)

    def tight(device, dtype, n):
        if n > 512:  # the device's free memory ends here
            return {f"mm fake {n}": lambda: (_ for _ in ()).throw(MemoryError("out of memory"))}
        return family(device, dtype, n)

    monkeypatch.setattr(probes, "PROBE_FAMILIES", ((tight, probes.PROBE_SIZES),))
    _fake_clock(monkeypatch, clock)
    peak = probes._peak.__wrapped__("cpu", "fp32", 0.05)
    assert peak.probe == "mm fake 512" and max(built) == 512
