"""Settings as data: one entry per precision, per backend and per scenario, and the tables' labels.

A precision says which devices and modes it runs on, its autocast dtype (if it is one), and the dtype
of the matmul probe that gives MFU its peak. A backend says which devices, modes and precisions it
runs, whether channels_last means anything to it, whether it runs several streams, the package it
needs (and the pip extra that brings it), and how it turns a model and its inputs into the calls
that are timed (``resbench/engine/backends.py``). A scenario says how calls are issued
(single-stream, offline, server: ``resbench/engine/scenarios.py``) and which knobs it takes.
Validation reads the entries; nothing else branches on a name.

A setting's label is its precision, then "+cl" for channels_last, then the backend ("+compile" or the
torch.compile mode for torch.compile, "+onnxruntime", "+openvino", ...): "bf16+cl+compile",
"int8+openvino". Eager PyTorch adds nothing. An Inductor backend's row that does not freeze where
freezing is the default (CPU inference) ends in "+nofreeze", one that freezes where it is not in
"+freeze" (``default_freezing``). Every tool reads labels through ``parse_label``, which takes that
grammar only: at most one "cl", one backend and one freezing mark.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from resbench.engine import backends, pt2e, runtimes

MODES = ("inference", "train")
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")
ALL_DEVICES = ("cpu", "cuda", "mps")


@dataclass(frozen=True)
class Precision:
    name: str
    devices: tuple[str, ...]
    modes: tuple[str, ...] = MODES
    autocast: torch.dtype | None = None  # torch.autocast dtype; None: the model's own fp32
    probe: torch.dtype | None = torch.float32  # matmul peak for MFU; None: no MFU
    tf32: bool = False  # TF32 tensor cores for fp32 matmuls and convolutions (CUDA)
    quantised: bool = False  # post-training static quantisation, through a backend that has it
    why_not: str = ""  # said when a device is refused


PRECISIONS = {
    p.name: p
    for p in (
        Precision("fp32", ALL_DEVICES),
        Precision("tf32", ("cuda",), tf32=True, why_not="is a CUDA tensor-core mode (use fp32)"),
        Precision("bf16", ALL_DEVICES, autocast=torch.bfloat16, probe=torch.bfloat16),
        Precision(
            "fp16",
            ("cuda", "mps"),
            autocast=torch.float16,
            probe=torch.float16,
            why_not="needs a CUDA or MPS device (use bf16 or fp32)",
        ),
        Precision(
            "int8",
            ("cpu",),
            modes=("inference",),
            probe=None,
            quantised=True,
            why_not="is quantised inference on CPUs (onnxruntime, openvino, compile, aotinductor)",
        ),
    )
}
FLOAT_PRECISIONS = tuple(p for p in PRECISIONS if not PRECISIONS[p].quantised)
QUANTISED_PRECISIONS = tuple(p for p in PRECISIONS if PRECISIONS[p].quantised)


@dataclass(frozen=True)
class Backend:
    name: str
    devices: tuple[str, ...]
    modes: tuple[str, ...]
    precisions: tuple[str, ...]
    wrap: Callable  # backends.<name>(Target) -> (one call per stream, prepare_s); see backends.py
    needs: str | None = None  # module to import; missing -> a "skipped" Result
    extra: str | None = None  # the pip extra that brings it
    channels_last: bool = True  # False: the runtime picks its own layout, "+cl" means nothing
    # why the runtime would not compute a precision here (its own capability report), or None;
    # None for PyTorch's backends, whose arithmetic devices.emulated() judges
    lacks: Callable[[str], str | None] | None = None
    # the wrap run once per process on a tiny model before the first row (backends.load_runtime),
    # so that no row's memory or first call carries the runtime's start-up; None: its own wrap
    warm: Callable | None = None
    # the devices on which it runs more than one stream (independent executors at once)
    stream_devices: tuple[str, ...] = ("cpu", "cuda")
    # Inductor compiles it, so Inductor's freezing applies (``default_freezing``)
    inductor: bool = False
    # how a quantised precision (int8) runs on it when that is not ``wrap``'s own business: PyTorch's
    # PT2E quantisation (resbench/engine/pt2e.py), with the package it needs and the extra that
    # brings it; a runtime that quantises inside its wrap (onnxruntime, openvino) has None
    quantised_wrap: Callable | None = None
    quantised_needs: str | None = None

    @property
    def pytorch(self) -> bool:
        """PyTorch's own arithmetic (eager, compile, AOTInductor, CUDA graphs): no runtime package."""
        return self.needs is None

    def installed(self, precision: str = "fp32") -> bool:
        """Whether the package it runs ``precision`` on is importable here (PyTorch's own always
        are; a quantised precision may need its quantiser)."""
        needs = self.needs_for(precision)
        return needs is None or importlib.util.find_spec(needs) is not None

    def needs_for(self, precision: str) -> str | None:
        """The package this backend needs to run ``precision``, or None for PyTorch alone."""
        if PRECISIONS[precision].quantised and self.quantised_needs is not None:
            return self.quantised_needs
        return self.needs

    def wrap_for(self, precision: str) -> Callable:
        """What turns a Target of ``precision`` into its calls (``wrap``, or ``quantised_wrap``)."""
        if PRECISIONS[precision].quantised and self.quantised_wrap is not None:
            return self.quantised_wrap
        return self.wrap


BACKENDS = {
    b.name: b
    for b in (
        Backend("eager", ALL_DEVICES, MODES, FLOAT_PRECISIONS, backends.eager),
        Backend(
            "compile",
            ("cpu", "cuda"),
            MODES,
            FLOAT_PRECISIONS + QUANTISED_PRECISIONS,
            backends.compiled,
            extra="deploy",  # torchao, for int8 (quantised_needs)
            inductor=True,
            quantised_wrap=pt2e.compiled,
            quantised_needs="torchao",
        ),
        Backend(
            "aotinductor",
            ("cpu", "cuda"),
            ("inference",),
            FLOAT_PRECISIONS + QUANTISED_PRECISIONS,
            backends.aotinductor,
            extra="deploy",
            warm=backends.compiled,  # Inductor, without a whole ahead-of-time build of its own
            inductor=True,
            quantised_wrap=pt2e.aotinductor,
            quantised_needs="torchao",
        ),
        Backend(
            "onnxruntime",
            ("cpu", "cuda"),
            ("inference",),
            ("fp32", "int8"),
            runtimes.onnxruntime,
            needs="onnxruntime",
            extra="deploy",
            channels_last=False,
        ),
        Backend(
            "openvino",
            ("cpu",),
            ("inference",),
            ("fp32", "bf16", "int8"),
            runtimes.openvino,
            needs="openvino",
            extra="deploy",
            channels_last=False,
            lacks=runtimes.openvino_lacks,
        ),
        Backend("cudagraphs", ("cuda",), MODES, FLOAT_PRECISIONS, backends.cudagraphs),
    )
}


@dataclass(frozen=True)
class Scenario:
    """How calls are issued (resbench/engine/scenarios.py), and what its Configs may set."""

    name: str
    about: str  # what it measures, in a few words (the tables' and --help's)
    modes: tuple[str, ...] = ("inference",)
    streams: bool = True  # takes --streams above 1
    rate: bool = False  # takes --rate or --target-p99-ms (and --max-queue-ms): one of the two


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("single-stream", "one call at a time, back to back", MODES, streams=False),
        Scenario("offline", "every stream busy with full batches"),
        Scenario("server", "Poisson arrivals through a dynamic batcher", rate=True),
    )
}
DEFAULT_SCENARIO = "single-stream"


def check_scenario(
    scenario: str,
    mode: str,
    streams: int,
    rate: float | None,
    max_queue_ms: float,
    target_p99_ms: float | None,
    device_type: str,
    backend: str,
) -> None:
    """Refuse a scenario's knobs where they mean nothing, with a ValueError that says why."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose one of: {', '.join(SCENARIOS)}")
    s = SCENARIOS[scenario]
    if mode not in s.modes:
        raise ValueError(f"scenario {scenario} is for inference only; got mode {mode}")
    if streams > 1 and not s.streams:
        raise ValueError(f"scenario {scenario} runs one stream; got {streams} (use offline/server)")
    if streams > 1 and device_type not in BACKENDS[backend].stream_devices:
        on = ", ".join(BACKENDS[backend].stream_devices) or "no device"
        raise ValueError(
            f"backend {backend} runs more than one stream on {on}; got {streams} on {device_type}"
        )
    if s.rate and (rate is None) == (target_p99_ms is None):
        raise ValueError(
            f"scenario {scenario} needs either a rate (--rate) or a p99 bound to search "
            "under (--target-p99-ms), not both"
        )
    if not s.rate and (rate is not None or target_p99_ms is not None or max_queue_ms):
        raise ValueError(
            f"rate, max_queue_ms and target_p99_ms are the server scenario's; got scenario {scenario}"
        )


def backend_of(compile_mode: str) -> str:
    """The backend a Result written before backends existed ran on."""
    return "eager" if compile_mode == "off" else "compile"


# what int8 calibrates on (Config.calibration_data): labelled images, the default whenever there are
# any ("train": the eval data's training split, or an ImageFolder's images outside the eval subset),
# "noise" (generated N(0,1) images), or a folder's path; None: N(0,1), all there is without data
CALIBRATION_DEFAULT = "train"


def calibration_mark(calibration: str | None) -> str:
    """The label's mark of a non-default calibration: "" (labelled images, or the N(0,1) of a run
    without data), "[noise]" when noise is asked for beside real images, "[<folder>]" for a path."""
    if calibration in (None, CALIBRATION_DEFAULT):
        return ""
    return "[noise]" if calibration == "noise" else f"[{Path(calibration).name or calibration}]"


# Inductor's freezing (torch._inductor.config.freezing): the weights become constants that Inductor
# folds and prepacks for oneDNN; what PyTorch's own CPU inference dashboard measures. The label marks
# a row only where it differs from the default: "+nofreeze" (off where it is on), "+freeze"
FREEZE_MARKS = {False: "nofreeze", True: "freeze"}


def _inductor_backends() -> str:
    """The backends Inductor compiles, for the messages: "compile, aotinductor"."""
    return ", ".join(n for n, b in BACKENDS.items() if b.inductor)


def default_freezing(device_type: str, mode: str, backend: str) -> bool:
    """Whether an Inductor backend's row freezes unless told otherwise: CPU inference does (what
    PyTorch's CPU inference dashboard runs); training never can; CUDA rows do not, until a
    measurement on a GPU says freezing pays there (issue 33)."""
    return BACKENDS[backend].inductor and mode == "inference" and device_type == "cpu"


def check_freezing(device_type: str, mode: str, backend: str, freezing: bool | None) -> None:
    """Refuse a freezing choice that means nothing, with a ValueError that says why."""
    if freezing is None:
        return
    if not BACKENDS[backend].inductor:
        raise ValueError(
            f"freezing is Inductor's (backends {_inductor_backends()}); got backend {backend}"
        )
    if freezing and mode == "train":
        raise ValueError("training rows never freeze: freezing makes the weights constants")


def label(
    precision: str,
    channels_last: bool,
    backend: str,
    compile_mode: str,
    calibration: str | None = None,
    freezing: bool | None = None,
) -> str:
    """The tables' label of a setting: "fp32", "bf16+cl+compile", "int8+openvino",
    "int8[noise]+onnxruntime" (int8 calibrated on N(0,1) images beside labelled ones),
    "bf16+cl+compile+nofreeze" (``freezing``: None for the default, else the choice)."""
    parts = [precision + calibration_mark(calibration)] + (["cl"] if channels_last else [])
    if backend == "compile":
        parts.append("compile" if compile_mode == "default" else compile_mode)
    elif backend != "eager":
        parts.append(backend)
    if freezing is not None:
        parts.append(FREEZE_MARKS[freezing])
    return "+".join(parts)


def _backend_parts() -> dict[str, tuple[str, str]]:
    """Each label part that names a backend -> (backend, compile mode)."""
    parts = {"compile": ("compile", "default")}
    parts |= {mode: ("compile", mode) for mode in COMPILE_MODES[1:]}
    parts |= {name: (name, "off") for name in BACKENDS if name not in ("eager", "compile")}
    return parts


def parse_label(text: str) -> dict:
    """A label -> precision, channels_last, backend and compile; ValueError says what is wrong.

    The grammar is ``label()``'s: a precision, then at most one "cl", then at most one backend
    ("compile" or a torch.compile mode for the compile backend), then at most one freezing mark
    ("nofreeze", "freeze") after an Inductor backend. Nothing else is accepted, so one label means
    one setting: "int8+onnxruntime+openvino" or "fp32+cl+cl" is an error, not a guess.
    """
    precision, *rest = text.split("+")
    calibration = None
    if precision.endswith("]") and "[" in precision:  # int8[noise]: what int8 calibrated on
        precision, calibration = precision[:-1].split("[", 1)
        if not PRECISIONS.get(precision, PRECISIONS["fp32"]).quantised or not calibration:
            raise ValueError(
                f"{text!r}: only a quantised precision takes a calibration mark, as in "
                "'int8[noise]+openvino'"
            )
    if precision not in PRECISIONS:
        raise ValueError(
            f"unknown precision {precision!r} in {text!r}; choose one of: {', '.join(PRECISIONS)}"
        )
    fields = {"precision": precision, "channels_last": False, "backend": "eager", "compile": "off"}
    if calibration is not None:
        fields["calibration_data"] = calibration
    named = ""  # the part that named the backend
    backend_parts = _backend_parts()
    freeze_parts = {mark: value for value, mark in FREEZE_MARKS.items()}
    for part in rest:
        if "freezing" in fields:
            raise ValueError(
                f"in {text!r}, {part!r} comes after the freezing mark; it ends a label"
            )
        if part in freeze_parts:
            if not named or not BACKENDS[fields["backend"]].inductor:
                raise ValueError(
                    f"in {text!r}, {part!r} follows an Inductor backend ({_inductor_backends()}), as in "
                    f"'bf16+cl+compile+{part}'"
                )
            fields["freezing"] = freeze_parts[part]
        elif part == "cl":
            if fields["channels_last"]:
                raise ValueError(f"{text!r} has 'cl' twice; a label has at most one")
            if named:
                spelled = label(precision, True, fields["backend"], fields["compile"])
                raise ValueError(f"in {text!r}, 'cl' comes before the backend: {spelled!r}")
            fields["channels_last"] = True
        elif part in backend_parts:
            if named:
                twice = (
                    f"{part!r} twice" if part == named else f"two backends, {named!r} and {part!r}"
                )
                raise ValueError(f"{text!r} names {twice}; a label names at most one backend")
            named = part
            fields["backend"], fields["compile"] = backend_parts[part]
        else:
            choices = ["cl", *(p for p in backend_parts if p != "default"), *freeze_parts]
            raise ValueError(f"unknown part {part!r} in {text!r}; use one of: {', '.join(choices)}")
    return fields


def check(device_type: str, mode: str, precision: str, backend: str, channels_last: bool) -> None:
    """Refuse a setting this device or mode cannot run, with a ValueError that says why."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of: {', '.join(MODES)}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    p, b = PRECISIONS[precision], BACKENDS[backend]
    if device_type not in p.devices:
        raise ValueError(f"precision {precision} {p.why_not}; got {device_type}")
    if mode not in p.modes:
        raise ValueError(f"precision {precision} is for {' and '.join(p.modes)} only; got {mode}")
    if device_type not in b.devices:
        raise ValueError(f"backend {backend} runs on {', '.join(b.devices)}; got {device_type}")
    if mode not in b.modes:
        raise ValueError(f"backend {backend} is inference-only; got mode {mode}")
    if precision not in b.precisions:
        on = [
            n for n, e in BACKENDS.items() if precision in e.precisions and device_type in e.devices
        ]
        # no flag named: each tool spells its backend flag its own way (or has none)
        hint = f" (precision {precision} runs on backends: {', '.join(on)})" if on else ""
        raise ValueError(
            f"backend {backend} runs {', '.join(b.precisions)}; got precision {precision}{hint}"
        )
    if channels_last and not b.channels_last:
        raise ValueError(
            f"channels_last is a PyTorch memory format; backend {backend} picks its own layout"
        )


def with_backends(
    fields: list[dict], backends: list[str], compile_modes: list[str] | None = None
) -> list[dict]:
    """Each setting on each backend (a --backends axis); a setting that names a backend keeps it.

    ``compile_modes`` are the torch.compile modes the compile backend runs (default: "default").
    """
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise ValueError(f"unknown backend {unknown[0]!r}; choose one of: {', '.join(BACKENDS)}")
    modes = [m for m in compile_modes or [] if m != "off"] or ["default"]
    out = []
    for f in fields:
        if f.get("backend", backend_of(f.get("compile", "off"))) != "eager":
            out.append(f)
            continue
        for b in backends:
            for mode in modes if b == "compile" else ["off"]:
                out.append(f | {"backend": b, "compile": mode})
    return list({tuple(sorted(f.items())): f for f in out}.values())


@contextlib.contextmanager
def numerics(
    precision: str, device: torch.device, deterministic: bool | None = None
) -> Iterator[None]:
    """Set TF32, cuDNN autotuning and (if given) determinism for ``precision``; restore after.

    fp32 means fp32: cuDNN would otherwise use TF32 for convolutions by default. Shapes are fixed,
    so cuDNN may autotune on CUDA, unless deterministic kernels are asked for.
    """
    saved = (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cudnn.benchmark,
        torch.are_deterministic_algorithms_enabled(),
    )
    if device.type == "cuda":
        tf32 = PRECISIONS[precision].tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cudnn.benchmark = not deterministic
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it to be
    if deterministic is not None:
        torch.use_deterministic_algorithms(deterministic)
    try:
        yield
    finally:
        (
            torch.backends.cuda.matmul.allow_tf32,
            torch.backends.cudnn.allow_tf32,
            torch.backends.cudnn.benchmark,
        ) = saved[:3]
        torch.use_deterministic_algorithms(saved[3])


def autocast(device: torch.device, precision: str):
    """torch.autocast for a precision that is one (bf16, fp16), a no-op context otherwise."""
    return backends.amp(device, PRECISIONS[precision].autocast)
