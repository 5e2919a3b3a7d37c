"""The roofline's ceilings, measured on the device under test: peak FLOP/s and memory bandwidth.

The peak for MFU is measured, not taken from a data sheet: ``measure_peak`` times several matmul
shapes and a 3x3 convolution in NCHW and channels_last on the same device and precision, with the
rows' own switches and clock, and takes the fastest (its name is the Result's ``peak_probe``). A
peak that a real workload beats is no peak: a single 2048^3 matmul was beaten by up to 8% by ONNX
Runtime's and OpenVINO's convolutions on a 2-core EPYC. The probes count nominal FLOPs, as the
rows do, so a Winograd or FFT convolution that cuDNN's autotuner picks raises the peak as it raises
a row. A row that still beats it has ``peak_exceeded`` and no MFU (``mfu_fields``): never above 1.

The memory ceiling is measured like the peak: ``measure_bandwidth_gbs`` times a large copy on the
device (read + write bytes over the median time). Both are cached per process.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from resbench import settings
from resbench.engine import timing
from resbench.engine.devices import free_memory, is_oom

# The peak for MFU: the fastest of several probes (PROBE_FAMILIES). A family's products grow
# together from its smallest size until one call of its first product takes PROBE_CALL_S or the
# largest size is reached; sizing stops at PROBE_SIZING_S per family whatever the device computes
# (an emulated bf16 2048^3 product takes ~56 s on an AVX2-only CPU, 256^3 ~0.1 s). Matmuls of side
# n: three shapes of 2 n^3 FLOPs each, (M, K, N) = square (n, n, n), tall (4n, n/2, n/2) and deep
# (n/2, 4n, n/2), and on CPUs the square as a oneDNN 1x1 convolution (MKL's sgemm behind torch.mm
# runs at half speed on AMD CPUs).
PROBE_SIZES = {"cpu": (256, 512, 1024, 2048), "other": (1024, 2048, 4096, 8192)}
# 3x3 convolutions, stride 1, padded, C in = C out, NCHW and channels_last: (batch, C, side);
# ResNet's layer3 on CPUs, its layer2-3 widths at larger batches elsewhere
PROBE_CONVS = {
    "cpu": ((1, 128, 14), (2, 256, 14), (8, 256, 14), (32, 256, 14)),
    "other": ((16, 256, 28), (64, 256, 28), (64, 512, 28), (256, 512, 28)),
}
PROBE_CALL_S, PROBE_SIZING_S = 0.05, 1.0
# the timed calls of every probe of one device and precision together (at least 3 calls each)
PROBE_BUDGET_S = 1.0
# what computes the products, by device type: (matmuls, convolutions)
PROBE_LIBRARIES = {"cpu": ("BLAS", "oneDNN"), "cuda": ("cuBLAS", "cuDNN"), "mps": ("MPS", "MPS")}

# a probe builds its tensors when asked (one probe's at a time): (FLOPs of one call, the call)
Probe = Callable[[], tuple[int, Callable[[], object]]]


@dataclass(frozen=True)
class Peak:
    """The peak MFU divides by: the fastest probe's TFLOP/s and its name (``Result.peak_probe``),
    with every probe's rate."""

    tflops: float
    probe: str
    rates: tuple[tuple[str, float], ...] = ()  # (probe, TFLOP/s) of every probe timed


def _randn(device: torch.device, dtype: torch.dtype, gen: torch.Generator, *shape: int):
    return torch.randn(*shape, generator=gen, device=device, dtype=dtype)


def _matmul_probes(device: torch.device, dtype: torch.dtype, n: int) -> dict[str, Probe]:
    gen = torch.Generator(device=device).manual_seed(0)
    blas, dnn = PROBE_LIBRARIES.get(device.type, (device.type, device.type))

    def product(m: int, k: int, p: int) -> Probe:
        def build():
            a, b = _randn(device, dtype, gen, m, k), _randn(device, dtype, gen, k, p)
            return 2 * m * k * p, lambda: torch.mm(a, b)

        return build

    shapes = ((n, n, n), (4 * n, n // 2, n // 2), (n // 2, 4 * n, n // 2))
    probes = {f"mm {blas} {m}x{k}x{p}": product(m, k, p) for m, k, p in shapes}
    if device.type == "cpu":

        def conv1x1():
            # the n x n x n product as a 1x1 convolution runs on oneDNN, as convolutions do
            cl = torch.channels_last
            x = (
                _randn(device, dtype, gen, n, n)
                .t()
                .reshape(1, n, n, 1)
                .contiguous(memory_format=cl)
            )
            w = (
                _randn(device, dtype, gen, n, n)
                .t()
                .reshape(n, n, 1, 1)
                .contiguous(memory_format=cl)
            )
            return 2 * n**3, lambda: F.conv2d(x, w)

        probes[f"conv1x1 {dnn} 1x{n}x{n}x1 cl"] = conv1x1
    return probes


def _conv_probes(
    device: torch.device, dtype: torch.dtype, shape: tuple[int, int, int]
) -> dict[str, Probe]:
    batch, channels, side = shape
    gen = torch.Generator(device=device).manual_seed(0)
    dnn = PROBE_LIBRARIES.get(device.type, (device.type, device.type))[1]

    def conv(layout: torch.memory_format) -> Probe:
        def build():
            x = _randn(device, dtype, gen, batch, channels, side, side)
            w = _randn(device, dtype, gen, channels, channels, 3, 3)
            x, w = x.contiguous(memory_format=layout), w.contiguous(memory_format=layout)
            count = 2 * batch * side * side * channels * channels * 9
            return count, lambda: F.conv2d(x, w, padding=1)

        return build

    name = f"conv3x3 {dnn} {batch}x{channels}x{side}x{side}"
    return {name: conv(torch.contiguous_format), f"{name} cl": conv(torch.channels_last)}


# (the probes at one size, the sizes by device: "cpu" or "other"); each family is sized by its first
PROBE_FAMILIES = ((_matmul_probes, PROBE_SIZES), (_conv_probes, PROBE_CONVS))


def _timed_call_s(fn: Callable, device: torch.device) -> float:
    start = time.perf_counter()
    fn()
    timing.synchronize(device)
    return time.perf_counter() - start


def _sized(device: torch.device, dtype: torch.dtype, family, ladder) -> dict[str, Probe]:
    """The family's probes at the largest size worth timing within the sizing deadline (and
    that fits in the device's free memory)."""
    deadline = time.perf_counter() + PROBE_SIZING_S
    fitted = None
    for size in ladder:
        probes = family(device, dtype, size)
        try:
            _, fn = next(iter(probes.values()))()
            fn()  # its one-off costs: oneDNN's JIT, cuDNN's autotuning, cuBLAS's workspace
            call_s = _timed_call_s(fn, device)
        except Exception as exc:
            if fitted is None or not is_oom(exc):
                raise
            free_memory(device)
            return fitted  # the last size that fitted
        del fn
        fitted = probes
        # large enough, or the next size (up to ~8x this call, run twice) would pass the deadline
        if call_s >= PROBE_CALL_S or time.perf_counter() + 16 * call_s > deadline:
            break
    return fitted


def _fastest_tflops(probe: Probe, device: torch.device, budget_s: float) -> float:
    """TFLOP/s of the probe's fastest call: a peak is the best the device did, not its typical
    rate, so a slow call (a neighbour's burst, a clock dip) cannot lower it."""
    count, fn = probe()
    per_call_ms = _timed_call_s(fn, device) * 1e3  # not a sample: this shape's one-off costs
    samples = timing.autorange(fn, device, budget_s, per_call_ms, min_iters=3)
    return count / (min(samples.samples_ms) / 1e3) / 1e12


@functools.cache
def _peak(device_str: str, precision: str, budget_s: float) -> Peak:
    device = torch.device(device_str)
    entry = settings.PRECISIONS.get(precision)
    if entry is None or entry.probe is None:
        probed = [p for p, e in settings.PRECISIONS.items() if e.probe is not None]
        raise ValueError(f"no peak probe for precision {precision!r}; probed: {', '.join(probed)}")
    kind = "cpu" if device.type == "cpu" else "other"
    rates: dict[str, float] = {}
    failed: BaseException | None = None
    on_device = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    # the rows' own switches: TF32 only for tf32, cuDNN autotuning on (as every CUDA row has it)
    with on_device, settings.numerics(precision, device):
        for family, ladders in PROBE_FAMILIES:
            probes = _sized(device, entry.probe, family, ladders[kind])
            share = budget_s / len(PROBE_FAMILIES) / len(probes)
            for name, probe in probes.items():
                try:
                    rates[name] = _fastest_tflops(probe, device, share)
                except Exception as exc:  # a probe too large for what is free: the others stand
                    if not is_oom(exc):
                        raise
                    failed = exc
                    free_memory(device)
    if not rates:
        raise failed or RuntimeError("no peak probe ran")
    best = max(rates, key=rates.__getitem__)
    return Peak(rates[best], best, tuple(rates.items()))


def measure_peak(
    device: str | torch.device, precision: str, budget_s: float = PROBE_BUDGET_S
) -> Peak:
    """The peak TFLOP/s of ``device`` in ``precision`` and the probe that reached it, cached per
    process: the fastest of several matmul shapes (cuBLAS on CUDA, the BLAS on CPUs) and 3x3
    convolutions in NCHW and channels_last (cuDNN, oneDNN), with the rows' own TF32 and cuDNN
    switches, so that a well-tuned workload cannot beat it.

    Each family's products grow (matmuls of side 256 to 2048 on CPUs, 1024 to 8192 elsewhere)
    until one call takes ~50 ms, within a 1 s sizing deadline, so that a precision the device only
    emulates costs seconds, not minutes. Each probe then gets one untimed call and its share of
    ``budget_s`` (at least 3 calls); its rate is its fastest call's. MFU = achieved / this.

    Its cost, estimated from the code at this 2-core EPYC's rates (~0.2 TFLOP/s fp32 through
    oneDNN, half that through MKL's sgemm), not timed: sizing ~0.4 s (matmuls to 2048) and ~0.1 s
    (convolutions to 32x256x14x14), then 4 calls of ~0.17 s for each BLAS product, ~0.35 s for the
    1x1 convolution and ~0.3 s for each 3x3 one: ~3.5 s per device and precision in fp32.
    """
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return _peak(str(device), precision, budget_s)


def measure_peak_tflops(
    device: str | torch.device, precision: str, budget_s: float = PROBE_BUDGET_S
) -> float:
    """``measure_peak(...).tflops``: the peak alone."""
    return measure_peak(device, precision, budget_s).tflops


def mfu_fields(tflops_achieved: float | None, peak_tflops: float | None) -> dict:
    """A Result's ``mfu`` and ``peak_exceeded``: achieved / peak, or, for a row faster than its
    peak (a probe defect: MFU cannot pass 100%), ``mfu`` None and ``peak_exceeded`` True. Both
    None without a peak."""
    if not peak_tflops or tflops_achieved is None:
        return {"mfu": None, "peak_exceeded": None}
    exceeded = tflops_achieved > peak_tflops
    return {"mfu": None if exceeded else tflops_achieved / peak_tflops, "peak_exceeded": exceeded}


def pool_forks(first, new, achieved: float | None) -> dict:
    """The MFU fields of processes' Results as one, at their pooled FLOP rate ``achieved``: the
    newest process's peak where it has one (with its probe), else the earlier one's."""
    peak = new.peak_tflops or first.peak_tflops
    return {
        "tflops_achieved": achieved,
        "peak_tflops": peak,
        "peak_probe": new.peak_probe if new.peak_tflops else first.peak_probe,
        **mfu_fields(achieved, peak),  # never above 100%: a row over its peak is flagged
    }


_BANDWIDTH_BYTES = {"cpu": 256 * 2**20, "other": 2 * 2**30}  # well past every cache


@functools.cache
def _bandwidth_gbs(device_str: str, budget_s: float) -> float:
    device = torch.device(device_str)
    n = _BANDWIDTH_BYTES["cpu" if device.type == "cpu" else "other"] // 4
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)

    def copy():
        dst.copy_(src)

    warm, _ = timing.warmup(copy, device, max_s=budget_s)
    samples = timing.autorange(copy, device, budget_s, float(warm.samples_ms[-1]), min_iters=5)
    median_s = timing.stats(samples.samples_ms).median / 1e3
    return 2 * src.numel() * src.element_size() / median_s / 1e9  # read + write


def measure_bandwidth_gbs(device: str | torch.device, budget_s: float = 1.0) -> float:
    """Achieved GB/s (1e9 bytes) of a large device-to-device copy, read + write; cached per process.

    256 MiB on CPUs, 2 GiB elsewhere, timed with the same clock as every measurement.
    """
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return _bandwidth_gbs(str(device), budget_s)
