"""FLOP and parameter counting on top of ``torch.utils.flop_counter.FlopCounterMode``.

Convention: 1 FLOP = one floating-point operation; a multiply-add counts 2. torchvision's published
``_ops`` figures are in GMACs, so ResNet-50 at 224x224 is 4.09 GMACs = 8.18 GFLOPs here.
FlopCounterMode counts convolutions and matrix products (the work that matters); batch norm, ReLU,
pooling and the additions of the skip path are not counted, as in torchvision's figures.

Counting runs on the ``meta`` device: an eager copy of the model with no storage, so counting
ResNet-152 takes about a second and never touches the device under test (and compiled graphs, which
FlopCounterMode cannot see into, never enter). Results are cached per model, image size and mode.

Bytes moved are the naive traffic estimate: a ``TorchDispatchMode`` beside the FLOP counter, over the
same meta-device pass, adds the sizes of every operator's input and output tensors. It ignores caches
and fusion (a fused kernel moves less, a cache-blocked one re-reads more), so it is an upper bound on
the unfused traffic, the usual basis of a roofline's arithmetic intensity. No layer has a formula here.
The roofline's two ceilings, the peak FLOP/s for MFU and the memory bandwidth, are measured on the
device in ``resbench/engine/probes.py`` (re-exported here, where callers have imported them from).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils import flop_counter
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from resbench.engine.probes import (  # noqa: F401 (their home; imported from here before)
    PROBE_SIZING_S,
    Peak,
    measure_bandwidth_gbs,
    measure_peak,
    measure_peak_tflops,
    mfu_fields,
)
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
    """Adds up what every operator reads and writes: the elements of its floating-point tensors
    (whose bytes depend on the precision counted) and the bytes of the others (labels, indices)."""

    def __init__(self) -> None:
        super().__init__()
        self.floating = 0  # elements
        self.other = 0  # bytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves((args, kwargs, out)):
            if isinstance(t, torch.Tensor):
                if t.is_floating_point():
                    self.floating += t.numel()
                else:
                    self.other += t.numel() * t.element_size()
        return out

    def bytes_in(self, dtype: torch.dtype) -> int:
        """The bytes moved with every floating-point tensor in ``dtype``."""
        return self.floating * dtype.itemsize + self.other


@dataclass(frozen=True)
class _Pass:
    """What one meta pass counted: FLOPs per module, in total, and the traffic."""

    flops_by_module: dict
    total_flops: int
    moved: ByteCounter
    stage_names: tuple
    prefix: str


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


@functools.cache
def _meta_pass(
    model_name: str, image_size: int, mode: str, batch: int, overrides: tuple = ()
) -> _Pass:
    """One forward (or forward + backward) in fp32 on the meta device under a FLOP and a byte
    counter, cached: the FLOP count and both byte counts share their batch-2 pass; ``overrides``
    are build_model's keyword arguments as sorted (name, value) pairs (the classes and input
    channels of loaded weights)."""
    if mode not in ("inference", "train"):
        raise ValueError(f"unknown mode {mode!r}; choose one of: inference, train")
    with torch.device("meta"):
        model = build_model(model_name, **dict(overrides))
        channels = dict(overrides).get("in_channels", 3)
        x = torch.randn(batch, channels, image_size, image_size)
        labels = torch.zeros(batch, dtype=torch.long)
    model.train(mode == "train")
    flops, moved = FlopCounterMode(display=False, custom_mapping=_FLOP_FORMULAS), ByteCounter()
    with flops, moved:
        if mode == "train":
            F.cross_entropy(model(x), labels).backward()
        else:
            with torch.no_grad():
                model(x)
    by_module = {name: sum(ops.values()) for name, ops in flops.get_flop_counts().items()}
    prefix = type(model).__name__ + "."
    return _Pass(by_module, flops.get_total_flops(), moved, tuple(model.stage_names), prefix)


# what this process has counted, by the counting function's arguments: a worker process is handed
# its parent's (known_counts / remember), so that each fork does not count every model again
_COUNTED: dict[tuple, FlopCount | int] = {}


def known_counts() -> dict[tuple, FlopCount | int]:
    """The FLOP and parameter counts this process has made (picklable)."""
    return dict(_COUNTED)


def remember(counts: dict[tuple, FlopCount | int]) -> None:
    """Take counts another process made (``known_counts``) as this process's own."""
    _COUNTED.update(counts)


def _remembered(fn):
    """Cache ``fn`` in _COUNTED, keyed by its name and arguments."""

    @functools.wraps(fn)
    def cached(*args):
        key = (fn.__name__, *args)
        if key not in _COUNTED:
            _COUNTED[key] = fn(*args)
        return _COUNTED[key]

    return cached


@_remembered
def count_flops(
    model_name: str, image_size: int, mode: str = "inference", overrides: tuple = ()
) -> FlopCount:
    """FLOPs per image: the forward pass ("inference") or forward + backward ("train").

    The optimizer's update is elementwise and not counted (a few FLOPs per parameter, under 0.1%).
    ``overrides``: build_model's keyword arguments as sorted (name, value) pairs.
    """
    counted = _meta_pass(model_name, image_size, mode, _COUNT_BATCH, overrides)
    prefix = counted.prefix
    by_stage = dict.fromkeys(counted.stage_names, 0)
    for name, n in counted.flops_by_module.items():
        if name.startswith(prefix) and "." not in name[len(prefix) :]:
            by_stage[_stage_of(name[len(prefix) :])] += n // _COUNT_BATCH
    return FlopCount(counted.total_flops // _COUNT_BATCH, by_stage)


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
    dtype = _COUNT_DTYPES[precision]  # the fp32 passes' floating-point elements, in this dtype
    one = _meta_pass(model_name, image_size, mode, 1).moved.bytes_in(dtype)
    two = _meta_pass(model_name, image_size, mode, 2).moved.bytes_in(dtype)
    return Traffic(fixed=2 * one - two, per_image=two - one)


def count_params(model: torch.nn.Module | str, overrides: tuple = ()) -> int:
    """Parameters of a module, or of a registry model by name (built on the meta device, cached;
    ``overrides`` as count_flops takes them)."""
    if isinstance(model, str):
        return _registry_params(model, overrides)
    return sum(p.numel() for p in model.parameters())


@_remembered
def _registry_params(name: str, overrides: tuple = ()) -> int:
    with torch.device("meta"):
        return count_params(build_model(name, **dict(overrides)))


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
    """`python -m resbench.engine.flops`: build models (on the meta device) and print their size
    and cost."""
    from resbench import cli

    def body() -> int:
        p = cli.Parser(
            prog="python -m resbench.engine.flops",
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

    return cli.run_cli("resbench.engine.flops", body)


if __name__ == "__main__":
    raise SystemExit(main())
