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
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
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
    if child in ("avgpool", "fc"):
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


_COUNT_DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16}
_COUNT_DTYPES["fp16"] = torch.float16


def _meta_pass(
    model_name: str, image_size: int, mode: str, batch: int, dtype: torch.dtype
) -> tuple[FlopCounterMode, int, torch.nn.Module]:
    """One forward (or forward + backward) on the meta device under a FLOP and a byte counter."""
    if mode not in ("inference", "train"):
        raise ValueError(f"unknown mode {mode!r}; choose one of: inference, train")
    with torch.device("meta"):
        model = build_model(model_name).to(dtype)
        x = torch.randn(batch, 3, image_size, image_size, dtype=dtype)
        labels = torch.zeros(batch, dtype=torch.long)
    model.train(mode == "train")
    flops, moved = FlopCounterMode(display=False), ByteCounter()
    with flops, moved:
        if mode == "train":
            F.cross_entropy(model(x), labels).backward()
        else:
            with torch.no_grad():
                model(x)
    return flops, moved.total, model


@functools.cache
def count_flops(model_name: str, image_size: int, mode: str = "inference") -> FlopCount:
    """FLOPs per image: the forward pass ("inference") or forward + backward ("train").

    The optimizer's update is elementwise and not counted (a few FLOPs per parameter, under 0.1%).
    """
    counter, _, model = _meta_pass(model_name, image_size, mode, _COUNT_BATCH, torch.float32)
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


def count_params(model: torch.nn.Module | str) -> int:
    """Parameters of a module, or of a registry model by name (built on the meta device, cached)."""
    if isinstance(model, str):
        return _registry_params(model)
    return sum(p.numel() for p in model.parameters())


@functools.cache
def _registry_params(name: str) -> int:
    with torch.device("meta"):
        return count_params(build_model(name))


def _probe_size(device: torch.device, precision: str) -> int:
    if device.type == "cpu":
        # ~0.1 s per product on a 2-core CPU: large enough to reach the BLAS's steady rate
        return 2048
    return 8192


@functools.cache
def _peak_tflops(device_str: str, precision: str, budget_s: float) -> float:
    device = torch.device(device_str)
    entry = settings.PRECISIONS.get(precision)
    if entry is None or entry.probe is None:
        probed = [p for p, e in settings.PRECISIONS.items() if e.probe is not None]
        raise ValueError(
            f"no matmul probe for precision {precision!r}; probed: {', '.join(probed)}"
        )
    n = _probe_size(device, precision)
    dtype = entry.probe
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
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = entry.tf32
    best = 0.0
    try:
        for fn in probes.values():
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

    n is 8192 on accelerators and 2048 on CPUs. MFU = achieved / this.
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
