"""PyTorch's own int8: post-training static quantisation through PT2E, lowered by Inductor with
freezing, so that oneDNN runs the convolutions on u8 activations and s8 weights.

The steps are PyTorch's documented path for x86 CPUs: ``torch.export`` (strict: non-strict export
fails on torchvision-style blocks with torch 2.14 and torchao 0.18), torchao's
``X86InductorQuantizer`` with its default configuration (per-channel symmetric s8 weights, u8
activations observed by a histogram), ``prepare_pt2e``, calibration on the same images as every
other int8 row (``runtimes.calibration_batches``), ``convert_pt2e``, then the compile or
aotinductor backend with freezing, which folds the quantised weights into oneDNN's prepacked ones.

``compiled(t)`` and ``aotinductor(t)`` are those backends' wraps for int8 (``settings.Backend``'s
``quantised_wrap``). Each calls the row once, untimed, to read back from oneDNN's verbose log what
its convolutions ran on (``effective_precision``, ``compute_kernel``): a row whose convolutions did
not run in int8 is refused, never labelled by its name; off x86 CPUs the path does not apply and the
row is skipped with the reason. A stage that fails raises ``StageFailed`` naming it (an "error"
row; the sweep goes on).
"""

from __future__ import annotations

import collections
import dataclasses
import platform
import time
import warnings

import torch

from resbench import env
from resbench.engine import backends, runtimes
from resbench.engine.backends import Steps, Target

# what the Result says its activation scales were observed with (X86InductorQuantizer's default)
OBSERVER = "histogram"


class StageFailed(RuntimeError):
    """A stage of the PT2E path failed: the message names it."""


def _stage(name: str, fn):
    try:
        return fn()
    except Exception as exc:
        raise StageFailed(
            f"PyTorch int8 (PT2E): {name} failed: {type(exc).__name__}: {exc}"
        ) from exc


def quantise(t: Target) -> torch.fx.GraphModule:
    """The Target's fp32 model, exported, quantised by X86InductorQuantizer and calibrated on the
    int8 rows' images (recorded in ``t.notes``): a GraphModule of quantise and dequantise nodes
    around fp32 operators, which Inductor lowers to oneDNN's int8 kernels."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86

    model = t.model.eval()
    with torch.no_grad():
        exported = _stage(
            "torch.export (strict)",
            lambda: torch.export.export(model, (t.inputs,), strict=True).module(),
        )
        quantizer = x86.X86InductorQuantizer()
        quantizer.set_global(x86.get_default_x86_inductor_quantization_config())
        prepared = _stage(
            "prepare_pt2e (X86InductorQuantizer)", lambda: prepare_pt2e(exported, quantizer)
        )
        batches = runtimes.calibration_batches(t)
        t.notes["calibration_method"] = OBSERVER

        def calibrate() -> None:
            for batch in batches:  # in the row's own layout (channels_last or not)
                prepared(torch.empty_like(t.inputs).copy_(torch.from_numpy(batch)))

        _stage("calibration", calibrate)
        return _stage("convert_pt2e", lambda: convert_pt2e(prepared))


def read_back(step, t: Target) -> None:
    """Call the row once under oneDNN's verbose log and record what its convolutions ran on:
    ``effective_precision`` (their source data type: u8 or s8 is int8) and the kernels."""
    _, lines = env.onednn_log(step)
    kinds = collections.Counter(
        runtimes.RUNTIME_PRECISIONS.get(src, src or "unknown")
        for _, src in env.onednn_convolutions(lines)
    )
    t.notes |= env.kernels_of(lines)
    t.notes["effective_precision"] = runtimes.conv_precision(dict(kinds))  # none ran: "unknown"


X86 = ("x86_64", "amd64", "i386", "i686")


def applies() -> str | None:
    """Why the PT2E path does not apply on this CPU (a "skipped" row), or None; off CPUs
    ``settings.PRECISIONS`` refuses int8 before anything is prepared."""
    machine = platform.machine()
    if machine.lower() not in X86:
        return (
            f"PyTorch int8 quantises with X86InductorQuantizer, for oneDNN on x86 CPUs; this CPU "
            f"is {machine}"
        )
    return None


def _int8(t: Target, wrap) -> tuple[Steps, float]:
    why = applies()
    if why:
        raise backends.Unfaithful(why)
    start = time.perf_counter()
    quantised = quantise(t)
    with warnings.catch_warnings():  # Inductor's own advice to itself, once per int8 lowering
        warnings.filterwarnings("ignore", "To copy construct from a tensor", UserWarning)
        steps, _ = _stage(  # AOTInductor exports and lowers here; torch.compile in the first call
            f"{wrap.__name__}'s compilation", lambda: wrap(dataclasses.replace(t, model=quantised))
        )
        _stage("Inductor's lowering (the first call)", lambda: read_back(steps[0], t))
    return steps, time.perf_counter() - start


def compiled(t: Target) -> tuple[Steps, float]:
    """int8 through PT2E, then torch.compile with freezing. Its preparation (export, calibration,
    quantisation and Inductor's compilation, in the first call) is all in ``prepare_s``."""
    return _int8(t, backends.compiled)


def aotinductor(t: Target) -> tuple[Steps, float]:
    """int8 through PT2E, then torch.export of the quantised graph and AOTInductor with freezing."""
    return _int8(t, backends.aotinductor)
