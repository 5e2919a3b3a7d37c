"""Config and Result: the data model, one measurement in and one out, both flat dataclasses.

A run is a list of Results, a JSON line each; a Result written before a field existed loads with
that field's default (``Result.from_dict``). ``validate_config`` refuses bad input up front, and
``missing_package`` says which optional runtime a Config needs. ``resbench.engine.measure`` measures
them (and re-exports these names, where users import them from).
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field

import torch

from resbench import settings
from resbench.engine import scenarios, timing
from resbench.engine.devices import default_device, default_threads, parse_device
from resbench.models import default_image_size, list_models
from resbench.settings import COMPILE_MODES


@dataclass(frozen=True)
class Config:
    """What is measured. Every field but model and batch_size has a default."""

    model: str
    batch_size: int
    image_size: int | None = None  # None: 224 for the ImageNet variants, 32 for the CIFAR family
    device: str = field(default_factory=default_device)
    mode: str = "inference"  # or "train": forward, cross-entropy, backward, SGD step
    precision: str = "fp32"  # tf32: TF32 tensor cores for fp32 math; bf16/fp16: torch.autocast
    channels_last: bool = False  # NHWC: tensor cores and oneDNN prefer it
    compile: str = "off"  # torch.compile mode, or "off"; set means backend "compile"
    backend: str | None = None  # settings.BACKENDS; None: "compile" if compile is set, else "eager"
    # int8: what the scales are calibrated on ("train", "noise", a folder; settings.calibration_mark);
    # None for every other precision, and for int8 without labelled data (N(0,1) images)
    calibration_data: str | None = None
    # how calls are issued (settings.SCENARIOS; resbench/engine/scenarios.py): "single-stream"
    # (one call at a time), "offline" (every stream busy) or "server" (Poisson arrivals, a
    # dynamic batcher)
    scenario: str = settings.DEFAULT_SCENARIO
    streams: int = 1  # independent executors running at once (offline, server)
    # intra-op threads per stream; None resolves to devices.default_threads(streams) when built, so
    # every Config and Result names the count it ran with (one stream: all the cores, as always)
    threads: int | None = None
    rate: float | None = None  # server: requests per second offered (Poisson), or None to search
    max_queue_ms: float = 0.0  # server: how long the oldest request waits for a fuller batch
    target_p99_ms: float | None = None  # server: find the highest rate whose p99 meets this
    # Inductor's freezing on the compile and aotinductor backends: None for the default (on for CPU
    # inference, off elsewhere: settings.default_freezing), else the choice where it differs
    freezing: bool | None = None

    def __post_init__(self) -> None:
        if self.image_size is None and self.model in list_models():
            object.__setattr__(self, "image_size", default_image_size(self.model))
        if self.backend is None:  # also every Result written before backends existed
            object.__setattr__(self, "backend", settings.backend_of(self.compile))
        elif self.backend == "compile" and self.compile == "off":
            object.__setattr__(self, "compile", "default")
        if self.threads is None and isinstance(self.streams, int) and self.streams >= 1:
            object.__setattr__(self, "threads", default_threads(self.streams))
        if self.freezing is not None and self.freezing == self._default_freezing():
            object.__setattr__(self, "freezing", None)  # one setting, one key and one label

    def _default_freezing(self) -> bool | None:
        if self.backend not in settings.BACKENDS or self.mode not in settings.MODES:
            return None  # validate_config says what is wrong
        return settings.default_freezing(str(self.device).split(":")[0], self.mode, self.backend)

    @property
    def frozen(self) -> bool:
        """Whether Inductor freezes this row's weights (the default, or the choice)."""
        return bool(self._default_freezing() if self.freezing is None else self.freezing)

    def config(self) -> Config:
        """The Config part of this object (a Result's measured setting)."""
        return Config(**{f.name: getattr(self, f.name) for f in dataclasses.fields(Config)})

    def key(self) -> tuple:
        """Identity of the setting, for resuming and comparing runs."""
        return dataclasses.astuple(self.config())

    @property
    def setting(self) -> str:
        """Short label of the non-default settings, e.g. "bf16+cl+compile"; "fp32" for the baseline."""
        return settings.label(
            self.precision, self.channels_last, self.backend, self.compile, self.calibration_data,
            self.freezing,
        )  # fmt: skip

    @property
    def is_baseline(self) -> bool:
        """fp32 eager PyTorch: what every other setting's agreement is measured against."""
        return self.precision == "fp32" and self.backend == "eager"


@dataclass(frozen=True)
class Result(Config):
    """A measured Config. Times in ms, memory in MB (1e6 bytes), FLOPs in GFLOPs (1e9)."""

    status: str = "ok"  # "ok" | "oom" | "error" | "skipped"
    error: str | None = None
    params: int | None = None
    gflops_per_image: float | None = None  # forward pass
    gflops_per_step: float | None = (
        None  # one timed iteration: forward (x batch), or fwd+bwd in train
    )
    latency_ms_median: float | None = None
    latency_ms_p10: float | None = None
    latency_ms_p90: float | None = None
    latency_ms_p99: float | None = None
    latency_ms_p999: float | None = None
    latency_ms_iqr: float | None = None
    iterations: int | None = None
    # images per second: batch_size / median latency (single-stream); images / wall time with
    # every stream busy (offline); completed requests per second (server: achieved_rate)
    throughput_ips: float | None = None
    # the offline and server scenarios (resbench/engine/serve.py). The latency figures above are
    # then per request: offline, the duration of the call that served it; server, from its scheduled
    # arrival to its completion, and None unless sustained (never a figure for a rate beyond
    # capacity). With target_p99_ms, offered_rate is the highest rate found to meet it.
    offered_rate: float | None = None  # requests per second offered
    achieved_rate: float | None = None  # requests completed per second
    sustained: bool | None = None  # the queue did not grow without bound (scenarios.ServerResult)
    mean_batch: float | None = None  # the batcher's mean batch (images per call)
    max_batch: int | None = None  # its largest batch (never above batch_size)
    requests: int | None = None  # requests offered (server) or images issued (offline)
    backlog_at_end: int | None = None  # server: arrived but not done when the last one arrived
    # target_p99_ms: every rate the peak search tried, in order: {rate, sustained, met,
    # latency_ms_p99, achieved_rate, mean_batch}
    peak_tries: list[dict] = field(default_factory=list)
    tflops_achieved: float | None = None
    peak_tflops: float | None = None  # the fastest peak probe on this device and precision
    mfu: float | None = None  # tflops_achieved / peak_tflops; None when peak_exceeded
    # issue 21 (FIGURES): which probe gave peak_tflops ("conv3x3 oneDNN 32x256x14x14 cl",
    # "mm cuBLAS 8192x8192x8192", "given to measure()"), and whether this row beat it (a probe
    # defect: then mfu is None, never above 1)
    peak_probe: str | None = None
    peak_exceeded: bool | None = None
    peak_memory_mb: float | None = None
    peak_memory_method: str | None = None
    compile_time_s: float | None = None  # the first call (torch.compile compiles lazily)
    # the Inductor options resbench set beyond the compile mode ({"freezing": true}); None for
    # backends Inductor does not compile, and in rows from before freezing was recorded
    inductor_options: dict | None = None
    prepare_s: float | None = None  # the backend's export, compilation, quantisation, session
    max_abs_diff: float | None = None  # largest |logit - fp32 eager logit|, same weights and batch
    top1_agreement: float | None = None  # fraction of the batch whose top-1 class fp32 eager shares
    calibration: str | None = (
        None  # int8: what the scales were calibrated on, in words, with the count
    )
    calibration_method: str | None = None  # int8: "minmax" | "entropy" | "percentile"
    calibration_images: int | None = None  # int8: how many images the scales saw
    # accuracy on labelled images (--eval-data; resbench/engine/evaluate.py), inference rows only:
    # scored through the row's own prepared call, outside the timed region, against fp32 eager at
    # the same batch size with the same weights and images
    # fraction of the eval images whose top-1 class is right; an image whose top logit is tied
    # between k classes counts 1/k if the label is among them (argmax would pick the lowest index)
    top1_accuracy: float | None = None
    top1_ties: int | None = None  # eval images whose top-1 was tied here (left out of the flips)
    top5_accuracy: float | None = None  # the same for the top 5 (only with more than 5 classes)
    accuracy_drop: float | None = (
        None  # points: fp32 eager top-1 minus this row's (0.0 for fp32 eager)
    )
    flips_lost: int | None = None  # untied images right in fp32 eager and wrong here
    flips_gained: int | None = None  # untied images wrong in fp32 eager and right here
    accuracy_drop_p: float | None = None  # exact McNemar p of the flips (1.0 with none)
    accuracy_drop_ci: list[float] | None = None  # [low, high] 95% interval of the drop, points
    kl_divergence: float | None = None  # mean KL(fp32 eager softmax || this row's), nats an image
    logit_rel_error: float | None = None  # ||logits - fp32 logits|| / ||fp32 logits||
    eval_images: int | None = None  # how many labelled images were scored
    eval_data: str | None = None  # where they came from (the --eval-data path)
    eval_s: float | None = None  # seconds the scoring took (not in any timed figure)
    # what the arithmetic really was, read back from the runtime (OpenVINO's compiled model,
    # onnxruntime's session graph) or from PyTorch's switches and the hardware: "fp32", "tf32",
    # "bf16", "int8", ..., "bf16-emulated" where the device has no units for it
    effective_precision: str | None = None
    compute_kernel: str | None = (
        None  # the convolution kernel that ran (oneDNN's, OpenVINO's, ORT op)
    )
    # PyTorch CPU rows, from oneDNN's log of one call of the row (env.kernels_of): every
    # convolution kernel with its share ("jit:avx512_core 17/20, jit_1x1:avx512_core 3/20", or
    # none through oneDNN), and the layout reorders in that call. None: not read (older rows, runtimes)
    # what max_abs_diff and top1_agreement were taken on: "N(0,1)" (the row's random inputs) or
    # "10000 images of DIR" (--eval-data's labelled images); None in older rows: N(0,1)
    agreement_inputs: str | None = None
    kernels: str | None = None
    reorders: int | None = None
    kernels_read: str | None = None  # where kernels were read later (scripts/reread_kernels.py)
    weights: str | None = None  # the state dict or checkpoint the model was loaded from (--weights)
    warmup_s: float | None = None
    measure_s: float | None = None  # wall time of the measured region
    host_ms_per_iter: float | None = None  # host wall clock per iteration over whole blocks
    issue_ms_per_iter: float | None = None  # host time to issue one iteration (no sync)
    noisy: bool | None = None  # IQR/median > 10%, or repeats further apart than that
    foreign_cpu: float | None = None  # cores kept busy by other processes while measuring
    repeats: int | None = None  # independent preparations (model, inputs, warm-up) measured
    repeat_medians_ms: list[float] = field(default_factory=list)  # one median per preparation
    repeat_spread: float | None = None  # (max - min) / median of repeat_medians_ms
    # --forks (resbench/sweep/forks.py): fresh worker processes whose measurements this Result
    # combines; latency_ms_median is the median of fork_medians_ms, each fork's the median of its
    # repeat medians. None (a row from before forks, or not measured): one process
    forks: int | None = None
    fork_medians_ms: list[float] = field(default_factory=list)  # one median per fork
    fork_spread: float | None = None  # (max - min) / median of fork_medians_ms
    # how many of samples_ms each fork measured, in order: the percentiles weight forks equally
    # (timing.fork_stats); empty in a row from before it was recorded
    fork_samples: list[int] = field(default_factory=list)
    quiet_wait_s: float | None = None  # time spent waiting for a quiet machine (--wait-quiet)
    quiet: bool | None = None  # False: the machine never became quiet within --wait-quiet
    allocator: str | None = None  # the CPU allocator's policy (devices.steady_allocator)
    # energy over the measured region (resbench/engine/power.py): NVML on CUDA, RAPL on CPUs;
    # None where unread
    avg_power_w: float | None = None  # watts: energy_j / the region's wall time
    joules_per_image: float | None = None  # energy_j / (iterations x batch_size)
    images_per_joule: float | None = None  # 1 / joules_per_image
    energy_j: float | None = None  # joules over the measured region
    power_method: str | None = None  # nvml_energy_counter, nvml_power_sampled, rapl, or why none
    sm_clock_mhz_start: int | None = None  # SM clock (MHz) as the region began
    sm_clock_mhz_end: int | None = None
    temperature_c_start: int | None = None  # GPU temperature (degrees C)
    temperature_c_end: int | None = None
    throttled: bool | None = None  # a power-cap, thermal or hardware slowdown was active
    throttle_reasons: str | None = None  # which, comma-separated
    tf32_matmul: bool | None = None
    tf32_cudnn: bool | None = None
    cudnn_benchmark: bool | None = None
    effective_batch_size: int | None = None
    device_name: str | None = None
    timestamp: str | None = None
    samples_ms: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Result:
        """Tolerates older runs: unknown keys are dropped, missing ones take their defaults; a row
        from before ``peak_exceeded`` with an MFU above 1 is flagged, its MFU dropped."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        backend = settings.BACKENDS.get(values.get("backend"))
        if "freezing" not in values and backend is not None and backend.inductor:
            values["freezing"] = False  # a row from before freezing was an option: never frozen
        mfu = values.get("mfu")
        if "peak_exceeded" not in values and isinstance(mfu, int | float) and mfu == mfu:
            values["peak_exceeded"] = bool(mfu > 1)
            values["mfu"] = None if mfu > 1 else mfu
        return cls(**values)

    @classmethod
    def for_config(cls, config: Config, **values) -> Result:
        return cls(**dataclasses.asdict(config.config()), **values)


def fork_medians(result: Result) -> list[float]:
    """One median per process: a Result's fork medians, or, for one without them (a run from
    before forks, a pytest-benchmark file), its headline median (none without one)."""
    medians = [float(m) for m in (getattr(result, "fork_medians_ms", None) or [])]
    if not medians and result.latency_ms_median is not None:
        medians = [float(result.latency_ms_median)]
    return medians


def fork_groups(result: Result) -> list[list[float]]:
    """Each fork's own samples, cut from ``samples_ms`` by ``fork_samples``, or recovered from the
    fork medians for a row written before those were recorded (``timing.split_forks``); one group
    for a one-process row; [] where they cannot be told apart (or no samples were kept)."""
    samples = list(getattr(result, "samples_ms", None) or [])
    counts = list(getattr(result, "fork_samples", None) or [])
    medians = fork_medians(result)
    if not samples:
        return []
    if counts and sum(counts) == len(samples) and all(counts):
        edges = [0, *itertools.accumulate(counts)]
        return [samples[a:b] for a, b in itertools.pairwise(edges)]
    if len(medians) <= 1:
        return [samples]
    return timing.split_forks(samples, medians) or []


def validate_config(config: Config) -> torch.device:
    """Refuse bad input up front with a ValueError naming the valid choices; return the device."""
    if config.model not in list_models():
        raise ValueError(
            f"unknown model {config.model!r}; choose one of: {', '.join(list_models())}"
        )
    for name in ("batch_size", "image_size"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}")
    if config.compile not in COMPILE_MODES:
        raise ValueError(
            f"unknown compile mode {config.compile!r}; choose one of: {', '.join(COMPILE_MODES)}"
        )
    if config.compile != "off" and config.backend != "compile":
        raise ValueError(
            f"compile mode {config.compile!r} is for backend compile, not {config.backend}"
        )
    device = parse_device(config.device)
    settings.check(device.type, config.mode, config.precision, config.backend, config.channels_last)
    settings.check_freezing(device.type, config.mode, config.backend, config.freezing)
    scenarios.check_streams(config.streams)
    scenarios.check_threads(config.threads, oversubscribe=True)  # the cores: the sweep's check
    if config.rate is not None:
        scenarios.check_rate(config.rate)
    if config.target_p99_ms is not None:
        scenarios.check_rate(config.target_p99_ms, "target_p99_ms")
    scenarios.check_queue_ms(config.max_queue_ms)
    settings.check_scenario(
        config.scenario, config.mode, config.streams, config.rate, config.max_queue_ms,
        config.target_p99_ms, device.type, config.backend,
    )  # fmt: skip
    return device


def missing_package(config: Config) -> str | None:
    """Why this Config's backend cannot run here (its package is not installed), or None."""
    backend = settings.BACKENDS[config.backend]
    if backend.installed(config.precision):
        return None
    needs, extra = backend.needs_for(config.precision), backend.extra
    what = (
        f"{config.precision} on backend {config.backend}"
        if needs != backend.needs
        else f"backend {config.backend}"
    )
    return (
        f"{what} needs {needs}: pip install 'resbench[{extra}]' (or pip install -e \".[{extra}]\")"
    )
