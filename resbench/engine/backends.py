"""How each PyTorch backend turns a prepared model into the calls that are timed, and the train step.

Every backend takes a ``Target`` (the fp32 model on its device, the inputs already there, the labels,
the setting, the streams) and returns ``(steps, prepare_s)``: one callable per stream
(``t.streams``; single-stream rows have one), each running one iteration on the same inputs, and the
seconds the preparation took (export, compilation, quantisation, session creation), which stay out
of the timed region. Inference steps return the model's output. A stream's step is called from that
stream's own thread (``resbench/engine/serve.py``), which on CUDA also puts it on a CUDA stream of
its own: eager and compiled models are shared by the streams (inference reads them only), while
state a call writes is made once per stream (a CUDA graph's buffers, an AOTInductor runner). The
deployment runtimes (ONNX Runtime, OpenVINO, int8) are in ``resbench/engine/runtimes.py``.
"""

from __future__ import annotations

import contextlib
import functools
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


Steps = list[Callable[[], object]]  # one call per stream


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
    streams: int = 1  # independent executors the row runs at once (offline, server scenarios)
    threads: int = 1  # intra-op threads per stream (PyTorch's are set around the row)
    runtime: object = None  # a deployment runtime's own object (OpenVINO's compiled model, ...)
    freezing: bool = False  # Inductor's freezing (compile, aotinductor; settings.default_freezing)


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


def eager(t: Target) -> tuple[Steps, float]:
    step = _pytorch_step(t.model, t)
    return [step] * t.streams, 0.0


def inductor_options(t: Target) -> dict:
    """The Inductor options resbench sets for a row beyond its torch.compile mode (the Result's
    ``inductor_options``): freezing, on or off."""
    options = {"freezing": t.freezing}
    t.notes["inductor_options"] = options
    return options


def compiled(t: Target) -> tuple[Steps, float]:
    """torch.compile: lazy, so its compilation happens in the first call (compile_time_s); the
    streams share the compiled model. Freezing is Inductor's global setting during that first
    call: passed as torch.compile's ``options`` it does not reach the passes that fold PT2E's
    quantised weights (onednn.qconv_prepack then fails to trace, torch 2.14)."""
    mode = None if t.compile_mode in ("default", "off") else t.compile_mode
    # static shapes: a second batch size in one process would otherwise get a dynamic-shape graph
    step = _pytorch_step(torch.compile(t.model, mode=mode, dynamic=False), t)
    config = inductor_options(t)
    compiled_yet = False

    def first_under_options():
        nonlocal compiled_yet
        if compiled_yet:
            return step()
        with torch._inductor.config.patch(config):
            out = step()
        compiled_yet = True
        return out

    return [first_under_options] * t.streams, 0.0


def cudagraphs(t: Target) -> tuple[Steps, float]:
    """The eager step captured in a CUDA graph and replayed (static inputs, static outputs); one
    graph per stream, each with its own buffers, replayed on the caller's current stream."""
    start = time.perf_counter()
    step = _pytorch_step(t.model, t)
    side = torch.cuda.Stream(t.device)
    side.wait_stream(torch.cuda.current_stream(t.device))
    with torch.cuda.stream(side):  # warm up off the default stream, as capture requires
        for _ in range(3):
            step()
    torch.cuda.current_stream(t.device).wait_stream(side)
    replays = []
    for _ in range(t.streams):
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = step()

        def replay(graph=graph, out=out):
            graph.replay()
            return out

        replays.append(replay)
    torch.cuda.synchronize(t.device)
    return replays, time.perf_counter() - start


def aotinductor(t: Target) -> tuple[Steps, float]:
    """torch.export, then AOTInductor compiles the graph ahead of time into a loadable package,
    loaded once per stream (one loaded package runs one call at a time)."""
    start = time.perf_counter()
    with torch.inference_mode(), amp(t.device, t.autocast):
        program = torch.export.export(t.model, (t.inputs,))
        path = torch._inductor.aoti_compile_and_package(
            program,
            package_path=str(t.workdir / "model.pt2"),
            inductor_configs=dict(inductor_options(t)),
        )
    steps = []
    for _ in range(t.streams):
        runner = torch._inductor.aoti_load_package(path)

        def infer(runner=runner):
            with torch.inference_mode():
                return runner(t.inputs)

        steps.append(infer)
    return steps, time.perf_counter() - start


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
        steps, _ = wrap(target)
        steps[0]()
        if device.type == "cuda":
            torch.cuda.synchronize(device)


def as_tensor(output: object) -> torch.Tensor:
    """A backend's output as a float32 CPU tensor."""
    if isinstance(output, torch.Tensor):
        return output.detach().float().cpu()
    return torch.from_numpy(np.array(output, dtype=np.float32, copy=True))
