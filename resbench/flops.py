"""FLOP and parameter counting on top of ``torch.utils.flop_counter.FlopCounterMode``.

Convention: 1 FLOP = one floating-point operation; a multiply-add counts 2. torchvision's published
``_ops`` figures are in GMACs, so ResNet-50 at 224x224 is 4.09 GMACs = 8.18 GFLOPs here.
FlopCounterMode counts convolutions and matrix products (the work that matters); batch norm, ReLU,
pooling and the additions of the skip path are not counted, as in torchvision's figures.

Counting runs on the ``meta`` device: an eager copy of the model with no storage, so counting
ResNet-152 takes about a second and never touches the device under test (and compiled graphs, which
FlopCounterMode cannot see into, never enter). Results are cached per model, image size and mode.

The peak for MFU is measured, not taken from a data sheet: ``measure_peak_tflops`` times a large
matrix product on the same device and precision with the same clock as every measurement (on CPUs,
the faster of the BLAS and oneDNN doing that product). Convolutions can still exceed it: Winograd
and FFT algorithms do fewer multiplications than the nominal count, so MFU above 100% can happen.

Bytes moved are the naive traffic estimate: a ``TorchDispatchMode`` beside the FLOP counter, over the
same meta-device pass, adds the sizes of every operator's input and output tensors. It ignores caches
and fusion (a fused kernel moves less, a cache-blocked one re-reads more), so it is an upper bound on
the unfused traffic, the usual basis of a roofline's arithmetic intensity. No layer has a formula here.
The memory ceiling is measured like the peak: ``measure_bandwidth_gbs`` times a large copy on the
device (read + write bytes over the median time).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils import flop_counter
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from resbench import settings, timing
from resbench.models import build_model, list_models

_COUNT_BATCH = 2  # FLOPs are linear in batch; 2 keeps train-mode BatchNorm well defined


@dataclass(frozen=True)
class FlopCount:
    """FLOPs of one image through a model, in total and per stage (stem, layer1.., head)."""

    total: int
    by_stage: dict[str, int]

    @property
    def gflops(self) -> float:
        return self.total / 1e9


def _stage_of(child: str) -> str:
    if child.startswith("layer"):
        return child
    if child in ("final_bn", "avgpool", "fc"):  # final_bn: pre-activated networks' last BN-ReLU
        return "head"
    return "stem"  # conv1, bn1, maxpool


class ByteCounter(TorchDispatchMode):
    """Adds up the bytes of every operator's input and output tensors (the naive traffic estimate)."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves((args, kwargs, out)):
            if isinstance(t, torch.Tensor):
                self.total += t.numel() * t.element_size()
        return out


def _conv_backward_flop(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation,
                        transposed, _output_padding, groups, output_mask, out_shape=None,
                        **kwargs) -> int:  # fmt: skip
    """FlopCounterMode's convolution backward, with a grouped convolution's weight gradient counted
    once: torch 2.14's formula transposes the shapes and loses the division by ``groups``, so a
    ResNeXt-50 train step counted 4.7x its forward pass instead of 3x (fixed upstream after 2.14,
    pytorch/pytorch#183405; this formula stands on its own, so the fix cannot apply twice)."""

    def t(shape):
        return [shape[1], shape[0], *shape[2:]]

    count = 0
    if output_mask[0]:  # grad_input: a transposed convolution of grad_out with the weight
        count += flop_counter.conv_flop_count(grad_out_shape, w_shape, out_shape[0], not transposed)
    if output_mask[1]:  # grad_weight: a convolution of the input with grad_out, per group
        pair = (grad_out_shape, x_shape) if transposed else (x_shape, grad_out_shape)
        count += flop_counter.conv_flop_count(t(pair[0]), t(pair[1]), t(out_shape[1])) // groups
    return count


_FLOP_FORMULAS = {torch.ops.aten.convolution_backward: _conv_backward_flop}

_COUNT_DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16}
_COUNT_DTYPES["fp16"] = torch.float16


def _meta_pass(
    model_name: str,
    image_size: int,
    mode: str,
    batch: int,
    dtype: torch.dtype,
    overrides: tuple = (),
) -> tuple[FlopCounterMode, int, torch.nn.Module]:
    """One forward (or forward + backward) on the meta device under a FLOP and a byte counter;
    ``overrides`` are build_model's keyword arguments as sorted (name, value) pairs (the classes
    and input channels of loaded weights)."""
    if mode not in ("inference", "train"):
        raise ValueError(f"unknown mode {mode!r}; choose one of: inference, train")
    with torch.device("meta"):
        model = build_model(model_name, **dict(overrides)).to(dtype)
        channels = dict(overrides).get("in_channels", 3)
        x = torch.randn(batch, channels, image_size, image_size, dtype=dtype)
        labels = torch.zeros(batch, dtype=torch.long)
    model.train(mode == "train")
    flops, moved = FlopCounterMode(display=False, custom_mapping=_FLOP_FORMULAS), ByteCounter()
    with flops, moved:
        if mode == "train":
            F.cross_entropy(model(x), labels).backward()
        else:
            with torch.no_grad():
                model(x)
    return flops, moved.total, model


@functools.cache
def count_flops(
    model_name: str, image_size: int, mode: str = "inference", overrides: tuple = ()
) -> FlopCount:
    """FLOPs per image: the forward pass ("inference") or forward + backward ("train").

    The optimizer's update is elementwise and not counted (a few FLOPs per parameter, under 0.1%).
    ``overrides``: build_model's keyword arguments as sorted (name, value) pairs.
    """
    counter, _, model = _meta_pass(
        model_name, image_size, mode, _COUNT_BATCH, torch.float32, overrides
    )
    prefix = type(model).__name__ + "."
    by_stage = dict.fromkeys(model.stage_names, 0)
    for name, ops in counter.get_flop_counts().items():
        if name.startswith(prefix) and "." not in name[len(prefix) :]:
            by_stage[_stage_of(name[len(prefix) :])] += sum(ops.values()) // _COUNT_BATCH
    return FlopCount(counter.get_total_flops() // _COUNT_BATCH, by_stage)


@dataclass(frozen=True)
class Traffic:
    """Naive bytes moved by one step: a fixed part (weights, their gradients) plus a part per image."""

    fixed: int
    per_image: int

    def bytes_per_step(self, batch_size: int) -> int:
        return self.fixed + self.per_image * batch_size


@functools.cache
def count_bytes(
    model_name: str, image_size: int, mode: str = "inference", precision: str = "fp32"
) -> Traffic:
    """Bytes every operator reads and writes in one step, with tensors in the precision's dtype.

    Two meta passes (batch 1 and 2) separate the traffic that grows with the batch from the rest.
    Autocast keeps some operators (batch norm, the loss) in fp32; here every tensor is in the
    lower precision, so for bf16/fp16 the estimate is a little low.
    """
    if precision not in _COUNT_DTYPES:
        raise ValueError(
            f"no byte count for precision {precision!r}; choose one of: {', '.join(_COUNT_DTYPES)}"
        )
    dtype = _COUNT_DTYPES[precision]
    one = _meta_pass(model_name, image_size, mode, 1, dtype)[1]
    two = _meta_pass(model_name, image_size, mode, 2, dtype)[1]
    return Traffic(fixed=2 * one - two, per_image=two - one)


def count_params(model: torch.nn.Module | str, overrides: tuple = ()) -> int:
    """Parameters of a module, or of a registry model by name (built on the meta device, cached;
    ``overrides`` as count_flops takes them)."""
    if isinstance(model, str):
        return _registry_params(model, overrides)
    return sum(p.numel() for p in model.parameters())


@functools.cache
def _registry_params(name: str, overrides: tuple = ()) -> int:
    with torch.device("meta"):
        return count_params(build_model(name, **dict(overrides)))


# the probe's product grows from the smallest size until one call takes PROBE_CALL_S (the BLAS's
# steady rate) or the largest size is reached; sizing stops at PROBE_SIZING_S whatever the device
# computes (an emulated bf16 2048^3 product takes ~56 s on an AVX2-only CPU, 256^3 ~0.1 s)
PROBE_SIZES = {"cpu": (256, 512, 1024, 2048), "other": (1024, 2048, 4096, 8192)}
PROBE_CALL_S, PROBE_SIZING_S = 0.05, 1.0


def _probe_products(device: torch.device, dtype: torch.dtype, n: int) -> dict[str, Callable]:
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device, dtype)
    b = torch.randn(n, n, generator=gen).to(device, dtype)
    probes = {"mm": lambda: torch.mm(a, b)}
    if device.type == "cpu":
        # the same n x n x n product as a 1x1 convolution runs on oneDNN, which convolutions use
        # too; the BLAS behind torch.mm can be far slower (MKL on AMD CPUs: half the rate here)
        x = a.t().reshape(1, n, n, 1).contiguous(memory_format=torch.channels_last)
        w = b.t().reshape(n, n, 1, 1).contiguous(memory_format=torch.channels_last)
        probes["conv1x1"] = lambda: F.conv2d(x, w)
    return probes


def _timed_call_s(fn: Callable, device: torch.device) -> float:
    start = time.perf_counter()
    fn()
    timing.synchronize(device)
    return time.perf_counter() - start


def _sized_probe(device: torch.device, dtype: torch.dtype, name: str) -> tuple[int, Callable]:
    """The largest product size (up to the last of PROBE_SIZES) worth timing within the sizing
    deadline, and its callable."""
    sizes = PROBE_SIZES["cpu" if device.type == "cpu" else "other"]
    deadline = time.perf_counter() + PROBE_SIZING_S
    for n in sizes:
        fn = _probe_products(device, dtype, n)[name]
        call_s = _timed_call_s(fn, device)
        # large enough, or the next size (~8x this call) would pass the deadline
        if call_s >= PROBE_CALL_S or time.perf_counter() + 8 * call_s > deadline:
            break
    return n, fn


@functools.cache
def _peak_tflops(device_str: str, precision: str, budget_s: float) -> float:
    device = torch.device(device_str)
    entry = settings.PRECISIONS.get(precision)
    if entry is None or entry.probe is None:
        probed = [p for p, e in settings.PRECISIONS.items() if e.probe is not None]
        raise ValueError(
            f"no matmul probe for precision {precision!r}; probed: {', '.join(probed)}"
        )
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = entry.tf32
    best = 0.0
    try:
        for name in _probe_products(device, entry.probe, 1):
            n, fn = _sized_probe(device, entry.probe, name)
            warm, _ = timing.warmup(fn, device, max_s=budget_s)
            samples = timing.autorange(
                fn, device, budget_s, float(warm.samples_ms[-1]), min_iters=5
            )
            median_s = timing.stats(samples.samples_ms).median / 1e3
            best = max(best, 2 * n**3 / median_s / 1e12)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
    return best


def measure_peak_tflops(device: str | torch.device, precision: str, budget_s: float = 1.0) -> float:
    """Achieved TFLOP/s of an n x n matrix product on ``device`` in ``precision``, cached per process.

    On CPUs the better of torch.mm and the same product as a 1x1 convolution (oneDNN).

    n grows (256 to 2048 on CPUs, 1024 to 8192 elsewhere) until one product takes ~50 ms, within
    a sizing deadline, so that a precision the device only emulates costs seconds, not minutes.
    Each product is then timed for ``budget_s``. MFU = achieved / this.
    """
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return _peak_tflops(str(device), precision, budget_s)


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


def registry_table(models: Sequence[str] | None = None, image_size: int | None = None) -> str:
    """Markdown: each model (default: the whole registry) with its parameters and FLOPs, at
    ``image_size`` or its default size."""
    import pandas as pd

    from resbench.models import default_image_size

    rows = []
    for name in models or list_models():
        size = image_size or default_image_size(name)
        fwd, train = count_flops(name, size), count_flops(name, size, "train")
        rows.append(
            {
                "model": name,
                "input": f"{size}x{size}",
                "params": f"{count_params(name):,}",
                "GFLOPs/img (forward)": f"{fwd.gflops:.3f}",
                "GMACs/img": f"{fwd.gflops / 2:.3f}",
                "GFLOPs/img (train step)": f"{train.gflops:.3f}",
            }
        )
    return pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m resbench.flops`: build models (on the meta device) and print their size and cost."""
    from resbench import cli

    def body() -> int:
        p = cli.Parser(
            prog="python -m resbench.flops",
            description="Parameters and FLOPs of the registry's models (built on the meta device, "
            "no weights or data): 1 FLOP = one operation, a multiply-add counts 2.",
        )
        p.add_argument("--models", help=cli.models_help("all"))
        p.add_argument(
            "--image-size", type=int, help="input side (default: 224 ImageNet, 32 CIFAR)"
        )
        args = p.parse_args(argv)
        models = cli.parse_models(args.models) if args.models is not None else None
        if args.image_size is not None:
            cli.bounded(args.image_size, "--image-size")
            for name in models or list_models():
                cli.check_image_size(name, args.image_size)
        print(registry_table(models, args.image_size))
        return 0

    return cli.run_cli("resbench.flops", body)


if __name__ == "__main__":
    raise SystemExit(main())
