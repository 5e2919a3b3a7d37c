"""How each backend turns a prepared model into the one call that is timed, and the one train step.

Every function here takes a ``Target`` (the fp32 model on its device, the inputs already there, the
labels, the setting) and returns ``(step, prepare_s)``: a callable that runs one iteration on the same
inputs, and the seconds its preparation took (export, compilation, quantisation, session creation),
which stay out of the timed region. Inference steps return the model's output. Runtimes other than
PyTorch are imported here, when used; ``resbench/settings.py`` says which backend needs which.
"""

from __future__ import annotations

import contextlib
import functools
import io
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.profiler import record_function

# record_function labels inside a train step, so the profiler can split the step (~1 us each)
LOSS_LABEL, OPTIMIZER_LABEL = "stage:loss", "stage:optimizer"
# int8 calibration without labelled images: the same seeded generated images at every batch size
# (fed in batches of the exported model's batch size), recorded in every int8 Result
CALIBRATION_SEED, CALIBRATION_IMAGES = 1234, 32
# onnxruntime's calibrators, by the name the sweep's --calibration takes (MinMax is its default)
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


@dataclass
class Calibration:
    """What int8's activation scales are calibrated on: the model's inputs (preprocessed labelled
    images), in words for the Result, and the calibrator."""

    images: torch.Tensor  # N, C, H, W float32, on the CPU
    description: str
    method: str = "minmax"


class Unfaithful(ValueError):
    """The runtime would not compute in the precision the setting's label names (a "skipped" row);
    ``effective`` is what it would compute in."""

    def __init__(self, why: str, effective: str | None = None) -> None:
        super().__init__(why)
        self.effective = effective


# a runtime's own names for what a layer computes in -> resbench's precisions
RUNTIME_PRECISIONS = {"f32": "fp32", "bf16": "bf16", "f16": "fp16", "i8": "int8", "u8": "int8"}


def conv_precision(kinds: dict[str, int]) -> str:
    """The precision most convolutions ran in, from {precision: count}; "mixed (...)" on a tie."""
    ranked = sorted(kinds.items(), key=lambda kv: -kv[1])
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        return "mixed (" + ", ".join(f"{k} x{n}" for k, n in ranked) + ")"
    return ranked[0][0] if ranked else "unknown"


@dataclass
class Target:
    """What a backend wraps: the model (fp32 weights, on the device) and its inputs and labels."""

    model: torch.nn.Module
    inputs: torch.Tensor
    labels: torch.Tensor
    device: torch.device
    mode: str
    autocast: torch.dtype | None  # the precision's autocast dtype, if any
    precision: str
    compile_mode: str = "off"
    workdir: Path | None = None  # where exported files go
    lr: float = 1e-3
    notes: dict = field(default_factory=dict)  # what the Result should record (calibration)
    calibration: Calibration | None = None  # int8: labelled images; None: generated N(0,1) ones


def amp(device: torch.device, dtype: torch.dtype | None):
    """torch.autocast for a dtype, a no-op context for None."""
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


class TrainStep:
    """Forward, cross-entropy, backward, SGD step: the one train step of measure() and the trainer.

    ``step(x, y)`` returns the loss and the logits; fp16 scales the loss (GradScaler) to keep small
    gradients representable, and for every other precision the scaler passes it through.
    """

    def __init__(
        self,
        runner: Callable,
        model: torch.nn.Module,
        device: torch.device,
        autocast: torch.dtype | None,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
    ) -> None:
        self.runner, self.device, self.autocast = runner, device, autocast
        self.optimizer = torch.optim.SGD(
            model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=autocast == torch.float16)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with amp(self.device, self.autocast):
            logits = self.runner(x)
            with record_function(LOSS_LABEL):
                loss = F.cross_entropy(logits, y)
        self.scaler.scale(loss).backward()
        with record_function(OPTIMIZER_LABEL):
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
        return loss, logits


def _pytorch_step(runner: Callable, t: Target) -> Callable[[], object]:
    if t.mode == "train":
        step = TrainStep(runner, t.model, t.device, t.autocast, t.lr)
        t.notes["optimizer"] = step.optimizer
        return lambda: step(t.inputs, t.labels)[0]

    def infer():
        with torch.inference_mode(), amp(t.device, t.autocast):
            return runner(t.inputs)

    return infer


def eager(t: Target) -> tuple[Callable[[], object], float]:
    return _pytorch_step(t.model, t), 0.0


def compiled(t: Target) -> tuple[Callable[[], object], float]:
    """torch.compile: lazy, so its compilation happens in the first call (compile_time_s)."""
    mode = None if t.compile_mode in ("default", "off") else t.compile_mode
    # static shapes: a second batch size in one process would otherwise get a dynamic-shape graph
    return _pytorch_step(torch.compile(t.model, mode=mode, dynamic=False), t), 0.0


def cudagraphs(t: Target) -> tuple[Callable[[], object], float]:
    """The eager step captured once in a CUDA graph and replayed (static inputs, static outputs)."""
    start = time.perf_counter()
    step = _pytorch_step(t.model, t)
    side = torch.cuda.Stream(t.device)
    side.wait_stream(torch.cuda.current_stream(t.device))
    with torch.cuda.stream(side):  # warm up off the default stream, as capture requires
        for _ in range(3):
            step()
    torch.cuda.current_stream(t.device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = step()
    torch.cuda.synchronize(t.device)

    def replay():
        graph.replay()
        return out

    return replay, time.perf_counter() - start


def aotinductor(t: Target) -> tuple[Callable[[], object], float]:
    """torch.export, then AOTInductor compiles the graph ahead of time into a loadable package."""
    start = time.perf_counter()
    with torch.inference_mode(), amp(t.device, t.autocast):
        program = torch.export.export(t.model, (t.inputs,))
        path = torch._inductor.aoti_compile_and_package(
            program, package_path=str(t.workdir / "model.pt2")
        )
    runner = torch._inductor.aoti_load_package(path)
    prepare_s = time.perf_counter() - start

    def infer():
        with torch.inference_mode():
            return runner(t.inputs)

    return infer, prepare_s


class _Tiny(torch.nn.Module):
    """A residual network of ResNet's operators (strided and 3x3 convolutions, batch norm, ReLU,
    max pooling, the skip's addition, global average pooling, a linear head), a few kB of
    weights: the least a backend's runtime loads for."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
        self.bn1, self.bn2 = torch.nn.BatchNorm2d(8), torch.nn.BatchNorm2d(8)
        self.pool = torch.nn.MaxPool2d(3, stride=2, padding=1)
        self.conv = torch.nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.head = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.bn1(self.stem(x))))
        x = F.relu(x + self.bn2(self.conv(x)))
        return self.fc(torch.flatten(self.head(x), 1))


@functools.cache
def load_runtime(
    wrap: Callable,
    device: torch.device,
    mode: str,
    precision: str,
    autocast: torch.dtype | None,
    compile_mode: str,
) -> None:
    """Run a backend (``wrap``) once per process on a tiny model, and call its step once.

    A runtime's one-off start-up (its imports, core objects and lazy initialisation: the ONNX
    exporter and onnxruntime's environment, OpenVINO's Core and CPU plugin, torch._dynamo and
    torch._inductor with their compiler checks, cuDNN's and cuBLAS's handles) then happens here,
    before any row's memory baseline and first call, instead of inside whichever row of its kind
    came first in the process (an onnxruntime row's peak memory grew by ~130 MB on a 2-core EPYC).
    Call it inside ``settings.numerics`` for the row's precision.
    """
    model = _Tiny().to(device).train(mode == "train")
    x = torch.randn(2, 3, 16, 16, device=device)
    y = torch.zeros(2, dtype=torch.long, device=device)
    with tempfile.TemporaryDirectory() as workdir:
        target = Target(model, x, y, device, mode, autocast, precision, compile_mode, Path(workdir))
        step, _ = wrap(target)
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)


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
    t.notes["calibration"] = f"{said}, in {count} batch(es) of {batch}"
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


def onnxruntime(t: Target) -> tuple[Callable[[], object], float]:
    """An InferenceSession: the CUDA provider on a GPU (onnxruntime-gpu), else the CPU provider."""
    import onnxruntime as ort

    start = time.perf_counter()
    path = _onnx_model(t)
    if t.device.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise RuntimeError("onnxruntime has no CUDA provider here: pip install onnxruntime-gpu")
        providers = [("CUDAExecutionProvider", {"device_id": t.device.index or 0})]
    else:
        providers = ["CPUExecutionProvider"]
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # the same threads as PyTorch's rows
    # the graph as the session runs it (after fusion and quantised-op rewriting): what it computes in
    options.optimized_model_filepath = str(t.workdir / "model.session.onnx")
    options.log_severity_level = 3  # its note that the saved graph is hardware-specific
    session = ort.InferenceSession(str(path), options, providers=providers)
    prepare_s = time.perf_counter() - start
    t.notes.update(onnxruntime_precision(Path(options.optimized_model_filepath)))
    name = session.get_inputs()[0].name
    if t.device.type != "cuda":
        feed = {name: t.inputs.cpu().numpy()}
        return lambda: session.run(None, feed)[0], prepare_s
    # inputs and outputs stay on the GPU: bound once to the tensors' memory
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

    return infer, prepare_s


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


def openvino(t: Target) -> tuple[Callable[[], object], float]:
    """OpenVINO's CPU plugin on the ONNX export, with the precision stated, not left to defaults."""
    import openvino as ov

    start = time.perf_counter()
    path = _onnx_model(t)
    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": torch.get_num_threads()}
    if t.precision in OPENVINO_HINTS:
        config["INFERENCE_PRECISION_HINT"] = OPENVINO_HINTS[t.precision]
    compiled_model = core.compile_model(core.read_model(str(path)), "CPU", config)
    t.notes.update(openvino_precision(compiled_model))
    request = compiled_model.create_infer_request()
    request.set_input_tensor(ov.Tensor(t.inputs.cpu().numpy(), shared_memory=True))
    prepare_s = time.perf_counter() - start

    def infer():
        request.infer()
        return request.get_output_tensor().data

    return infer, prepare_s


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


def as_tensor(output: object) -> torch.Tensor:
    """A backend's output as a float32 CPU tensor."""
    if isinstance(output, torch.Tensor):
        return output.detach().float().cpu()
    return torch.from_numpy(np.array(output, dtype=np.float32, copy=True))
