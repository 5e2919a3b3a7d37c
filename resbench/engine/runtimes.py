"""The deployment runtimes: the model exported to ONNX, int8 by post-training quantisation, and run
by ONNX Runtime or OpenVINO, each with the precision it really computed in read back from the runtime.

Like the PyTorch backends (``resbench/engine/backends.py``), ``onnxruntime(t)`` and ``openvino(t)``
take a ``backends.Target`` and return ``(steps, prepare_s)``: one call per stream, and the seconds
the export, quantisation and session creation took. Streams are each runtime's own: one ONNX Runtime
session per stream (its intra-op pool of ``t.threads``), and OpenVINO's streams with one infer
request each (``NUM_STREAMS``, ``INFERENCE_NUM_THREADS`` = streams x threads), as benchmark_app runs
them. The runtimes are imported here, when used; ``resbench/settings.py`` says which backend needs
which package.
"""

from __future__ import annotations

import contextlib
import functools
import io
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from resbench.engine.backends import Steps, Target

# int8 calibration without labelled images: the same seeded generated images at every batch size
# (fed in batches of the exported model's batch size), recorded in every int8 Result
CALIBRATION_SEED, CALIBRATION_IMAGES = 1234, 32
# onnxruntime's calibrators, by the name the sweep's --calibration takes (MinMax is its default)
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")

# a runtime's own names for what a layer computes in -> resbench's precisions
RUNTIME_PRECISIONS = {"f32": "fp32", "bf16": "bf16", "f16": "fp16", "i8": "int8", "u8": "int8"}


def conv_precision(kinds: dict[str, int]) -> str:
    """The precision most convolutions ran in, from {precision: count}; "mixed (...)" on a tie."""
    ranked = sorted(kinds.items(), key=lambda kv: -kv[1])
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        return "mixed (" + ", ".join(f"{k} x{n}" for k, n in ranked) + ")"
    return ranked[0][0] if ranked else "unknown"


def export_onnx(t: Target) -> Path:
    """The fp32 model as ONNX (torch.onnx's dynamo exporter), on the CPU, at this batch size."""
    path = t.workdir / "model.onnx"
    model = t.model.to("cpu", memory_format=torch.contiguous_format)
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter narrates every pass
        torch.onnx.export(model, (t.inputs.cpu().contiguous(),), str(path), dynamo=True)
    t.model.to(t.device)
    return path


def calibration_batches(t: Target) -> list[np.ndarray]:
    """What int8 scales are calibrated on, in batches of the exported model's batch size: the
    Target's labelled images (the last batch filled up from the first images), or, without any,
    generated N(0, 1) images from a fixed seed, the same at every batch size (at least
    CALIBRATION_IMAGES; more only for a larger batch)."""
    batch, *image = t.inputs.shape
    cal = t.calibration
    method = cal.method if cal is not None else "minmax"
    if cal is not None:
        count = -(-len(cal.images) // batch)
        images = cal.images.float().cpu()
        images = torch.cat([images, images[: count * batch - len(images)]])  # whole batches
        said = cal.description
    else:
        count = -(-max(CALIBRATION_IMAGES, batch) // batch)  # batches, rounded up
        gen = torch.Generator().manual_seed(CALIBRATION_SEED)
        images = torch.randn(count * batch, *image, generator=gen)
        said = f"{count * batch} generated N(0,1) images, seed {CALIBRATION_SEED}"
    t.notes["calibration"] = f"{said}, in {count} batch{'es' if count != 1 else ''} of {batch}"
    t.notes["calibration_method"] = method
    t.notes["calibration_images"] = len(images)
    return [b.contiguous().numpy() for b in images.split(batch)]


def quantise_onnx(t: Target, fp32_path: Path) -> Path:
    """Post-training static int8 quantisation (QDQ, per-channel weights) with onnxruntime's tools."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self, name: str, batches: list[np.ndarray]) -> None:
            self.batches = iter([{name: b} for b in batches])

        def get_next(self):
            return next(self.batches, None)

    import onnx

    name = onnx.load(str(fp32_path), load_external_data=False).graph.input[0].name
    ready, out = t.workdir / "model.pre.onnx", t.workdir / "model.int8.onnx"
    quant_pre_process(str(fp32_path), str(ready))
    batches = calibration_batches(t)
    methods = dict(zip(CALIBRATION_METHODS, ("MinMax", "Entropy", "Percentile"), strict=True))
    quantize_static(
        str(ready),
        str(out),
        Reader(name, batches),
        calibrate_method=getattr(CalibrationMethod, methods[t.notes["calibration_method"]]),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return out


def _onnx_model(t: Target) -> Path:
    path = export_onnx(t)
    return quantise_onnx(t, path) if t.precision == "int8" else path


def onnxruntime(t: Target) -> tuple[Steps, float]:
    """An InferenceSession per stream, each with ``t.threads`` intra-op threads: the CUDA provider
    on a GPU (onnxruntime-gpu), else the CPU provider."""
    import onnxruntime as ort

    start = time.perf_counter()
    path = _onnx_model(t)
    if t.device.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise RuntimeError("onnxruntime has no CUDA provider here: pip install onnxruntime-gpu")
        providers = [("CUDAExecutionProvider", {"device_id": t.device.index or 0})]
    else:
        providers = ["CPUExecutionProvider"]
    # the graph as the first session runs it (after fusion and quantised-op rewriting): what it
    # computes in
    optimised = t.workdir / "model.session.onnx"
    steps, t.runtime = [], []  # the sessions
    for stream in range(t.streams):
        options = ort.SessionOptions()
        options.intra_op_num_threads = t.threads  # PyTorch's rows run the same threads
        if stream == 0:
            options.optimized_model_filepath = str(optimised)
        options.log_severity_level = 3  # its note that the saved graph is hardware-specific
        session = ort.InferenceSession(str(path), options, providers=providers)
        t.runtime.append(session)
        steps.append(_ort_call(session, t))
    prepare_s = time.perf_counter() - start
    t.notes.update(onnxruntime_precision(optimised))
    return steps, prepare_s


def _ort_call(session, t: Target) -> Callable[[], object]:
    """One session's call on the Target's inputs; on CUDA bound once to the tensors' memory, so
    inputs and outputs stay on the GPU."""
    name = session.get_inputs()[0].name
    if t.device.type != "cuda":
        feed = {name: t.inputs.cpu().numpy()}
        return lambda: session.run(None, feed)[0]
    out = torch.empty(t.inputs.shape[0], t.model.fc.out_features, device=t.device)
    binding = session.io_binding()
    x = t.inputs.contiguous()
    binding.bind_input(name, "cuda", t.device.index or 0, np.float32, tuple(x.shape), x.data_ptr())
    binding.bind_output(
        session.get_outputs()[0].name, "cuda", t.device.index or 0, np.float32,
        tuple(out.shape), out.data_ptr(),
    )  # fmt: skip

    def infer():
        session.run_with_iobinding(binding)
        return out

    return infer


# the convolution ops of an onnxruntime graph, by what they compute in
ORT_CONVS = {"Conv": "fp32", "FusedConv": "fp32", "NhwcFusedConv": "fp32", "QLinearConv": "int8",
             "ConvInteger": "int8", "NhwcConv": "fp32"}  # fmt: skip


def onnxruntime_precision(optimised: Path) -> dict:
    """effective_precision and compute_kernel of the session's own (optimised) graph: the
    precision and op type of most of its convolutions."""
    import onnx

    if not optimised.exists():  # a provider that compiles the graph away saves none
        return {"effective_precision": None, "compute_kernel": None}
    ops = [n.op_type for n in onnx.load(str(optimised), load_external_data=False).graph.node]
    convs = [op for op in ops if op in ORT_CONVS]
    kinds: dict[str, int] = {}
    for op in convs:
        kinds[ORT_CONVS[op]] = kinds.get(ORT_CONVS[op], 0) + 1
    return {
        "effective_precision": conv_precision(kinds),
        "compute_kernel": max(set(convs), key=convs.count) if convs else None,
    }


# OpenVINO's CPU plugin computes in bf16 by default where it can, which is not fp32: the hint says;
# in int8 it sets the precision of what was not quantised
OPENVINO_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # int8: the rest in f32


def openvino(t: Target) -> tuple[Steps, float]:
    """OpenVINO's CPU plugin on the ONNX export, with the precision stated, not left to defaults;
    more than one stream: its own streams (NUM_STREAMS) with an infer request per stream, as
    benchmark_app's -nstreams/-nireq, over streams x threads inference threads."""
    import openvino as ov

    start = time.perf_counter()
    path = _onnx_model(t)
    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": t.streams * t.threads}
    if t.streams > 1:
        config["NUM_STREAMS"] = t.streams
    if t.precision in OPENVINO_HINTS:
        config["INFERENCE_PRECISION_HINT"] = OPENVINO_HINTS[t.precision]
    compiled_model = core.compile_model(core.read_model(str(path)), "CPU", config)
    t.runtime = compiled_model  # its properties: what streams, threads and precision it runs
    t.notes.update(openvino_precision(compiled_model))
    steps = []
    for _ in range(t.streams):
        request = compiled_model.create_infer_request()
        request.set_input_tensor(ov.Tensor(t.inputs.cpu().numpy(), shared_memory=True))

        def infer(request=request):
            request.infer()
            return request.get_output_tensor().data

        steps.append(infer)
    return steps, time.perf_counter() - start


# what OpenVINO's CPU plugin must list in OPTIMIZATION_CAPABILITIES to compute a precision
OPENVINO_CAPABILITY = {"fp32": "FP32", "bf16": "BF16", "int8": "INT8"}


@functools.cache
def openvino_capabilities() -> list[str]:
    """OpenVINO's CPU plugin's OPTIMIZATION_CAPABILITIES on this machine ("FP32", "BF16", "INT8", ...)."""
    import openvino as ov

    return list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def openvino_lacks(precision: str) -> str | None:
    """Why OpenVINO's CPU plugin would not compute ``precision`` here (its capabilities lack it), or
    None; asked before exporting, so that a row that would be false costs nothing."""
    capabilities = openvino_capabilities()
    if OPENVINO_CAPABILITY[precision] in capabilities:
        return None
    return (
        f"OpenVINO's CPU plugin lists no {OPENVINO_CAPABILITY[precision]} on this CPU (its "
        f"capabilities: {', '.join(capabilities)}): it would compute in fp32"
    )


def openvino_precision(compiled_model) -> dict:
    """effective_precision and compute_kernel as the compiled model reports them: the runtime
    precision and primitive of most convolutions (not the hint asked for, which a CPU without
    the units silently overrides)."""
    kinds: dict[str, int] = {}
    kernels: list[str] = []
    for op in compiled_model.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if "layerType" not in info or info["layerType"].astype(str) != "Convolution":
            continue
        runtime = info["runtimePrecision"].astype(str)
        name = RUNTIME_PRECISIONS.get(runtime, runtime)
        kinds[name] = kinds.get(name, 0) + 1
        kernels.append(info["primitiveType"].astype(str))
    return {
        "effective_precision": conv_precision(kinds),
        "compute_kernel": max(set(kernels), key=kernels.count) if kernels else None,
    }
