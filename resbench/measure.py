"""Config -> Result: prepare one model for one setting, time it, count it.

``measure(Config("resnet50", 32, device="cuda", precision="bf16"))`` returns a flat ``Result`` with every
Config field plus latency percentiles, throughput, FLOPs, MFU and peak memory. Failure is data: an
out-of-memory error becomes status "oom", any other runtime error status "error"; only bad input
(unknown model, batch size 0, a device that is not there) raises ``ValueError``, before any work.

Peak memory: on CUDA, ``max_memory_allocated`` after ``reset_peak_memory_stats`` (tensors alive at the
peak of the measured iterations: weights, inputs, optimizer state, activations, workspaces). On Linux
CPUs, the growth of the process's peak resident set (``VmHWM``, reset through ``/proc/self/clear_refs``)
over its resident set before the model was built, after ``gc`` and ``malloc_trim``: the same quantities
as on CUDA, plus oneDNN's caches. Elsewhere on CPUs the resident set sampled after each block (a lower
bound); on MPS the driver's allocated memory after the run. ``peak_memory_method`` says which.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import datetime as _dt
import gc
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import torch
import torch.nn.functional as F
from torch.profiler import record_function

from resbench import env, flops, power, timing
from resbench.models import build_model, default_image_size, list_models

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")
MODES = ("inference", "train")
_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# the update's size does not change the work; a small one keeps random-label steps finite
TRAIN_LR = 1e-3
# record_function labels inside a train step, so the profiler can split the step (~1 us each)
LOSS_LABEL, OPTIMIZER_LABEL = "stage:loss", "stage:optimizer"


def mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def default_device() -> str:
    """The best available device: cuda, then mps, then cpu."""
    if torch.cuda.is_available():
        return "cuda"
    return "mps" if mps_available() else "cpu"


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
    compile: str = "off"  # torch.compile mode, or "off" for eager

    def __post_init__(self) -> None:
        if self.image_size is None and self.model in list_models():
            object.__setattr__(self, "image_size", default_image_size(self.model))

    def config(self) -> Config:
        """The Config part of this object (a Result's measured setting)."""
        return Config(**{f.name: getattr(self, f.name) for f in dataclasses.fields(Config)})

    def key(self) -> tuple:
        """Identity of the setting, for resuming and comparing runs."""
        return dataclasses.astuple(self.config())

    @property
    def setting(self) -> str:
        """Short label of the non-default settings, e.g. "bf16+cl+compile"; "fp32" for the baseline."""
        parts = [self.precision]
        if self.channels_last:
            parts.append("cl")
        if self.compile != "off":
            parts.append("compile" if self.compile == "default" else self.compile)
        return "+".join(parts)


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
    latency_ms_iqr: float | None = None
    iterations: int | None = None
    throughput_ips: float | None = None  # images per second = batch_size / median latency
    tflops_achieved: float | None = None
    peak_tflops: float | None = None  # matmul probe on this device and precision
    mfu: float | None = None  # tflops_achieved / peak_tflops
    peak_memory_mb: float | None = None
    peak_memory_method: str | None = None
    compile_time_s: float | None = None
    warmup_s: float | None = None
    measure_s: float | None = None  # wall time of the measured region
    host_ms_per_iter: float | None = None  # host wall clock per iteration over whole blocks
    issue_ms_per_iter: float | None = None  # host time to issue one iteration (no sync)
    noisy: bool | None = None  # IQR/median > 10%
    foreign_cpu: float | None = None  # cores kept busy by other processes while measuring
    # energy over the measured region (resbench.power): NVML on CUDA, RAPL on CPUs; None where unread
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
    threads: int | None = None
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
        """Tolerates older runs: unknown keys are dropped, missing ones take their defaults."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def for_config(cls, config: Config, **values) -> Result:
        return cls(**dataclasses.asdict(config.config()), **values)


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
    if config.mode not in MODES:
        raise ValueError(f"unknown mode {config.mode!r}; choose one of: {', '.join(MODES)}")
    if config.precision not in PRECISIONS:
        raise ValueError(
            f"unknown precision {config.precision!r}; choose one of: {', '.join(PRECISIONS)}"
        )
    if config.compile not in COMPILE_MODES:
        raise ValueError(
            f"unknown compile mode {config.compile!r}; choose one of: {', '.join(COMPILE_MODES)}"
        )
    device = parse_device(config.device)
    if config.precision == "fp16" and device.type == "cpu":
        raise ValueError("precision fp16 needs a CUDA or MPS device; got cpu (use bf16 or fp32)")
    if config.precision == "tf32" and device.type != "cuda":
        raise ValueError(f"precision tf32 is a CUDA tensor-core mode; got {device.type} (use fp32)")
    return device


def parse_device(name: str) -> torch.device:
    """A torch.device that exists here, or a ValueError that says what does."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"unknown device {name!r}; choose one of: cpu, cuda, cuda:N, mps"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {name!r} asked for but CUDA is not available "
                f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}); use --device cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {name!r} does not exist; this machine has "
                f"{torch.cuda.device_count()} CUDA device(s): cuda:0..cuda:{torch.cuda.device_count() - 1}"
            )
    elif device.type == "mps":
        if not mps_available():
            raise ValueError(
                f"device {name!r} asked for but MPS is not available; use --device cpu"
            )
    elif device.type != "cpu":
        raise ValueError(f"unknown device {name!r}; choose one of: cpu, cuda, cuda:N, mps")
    return device


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    return env.cpu_model()


def is_oom(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or the CPU allocator's failure to allocate."""
    oom_type = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    if isinstance(exc, oom_type | MemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text or "Failed to allocate" in text
    )


def free_memory(device: torch.device | None = None) -> None:
    gc.collect()
    if torch.cuda.is_available() and (device is None or device.type == "cuda"):
        torch.cuda.empty_cache()
    if device is not None and device.type == "mps":
        torch.mps.empty_cache()
    _malloc_trim()


def _malloc_trim() -> None:
    """Return freed heap memory to the OS (glibc), so the resident set reflects live memory."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@dataclass
class Prepared:
    """A model ready to run one Config: ``step()`` runs one timed iteration."""

    config: Config
    device: torch.device
    model: torch.nn.Module  # the eager module (compiled or not, it owns the parameters)
    runner: Callable  # what step() calls: the compiled module, or the model itself
    inputs: torch.Tensor
    labels: torch.Tensor
    step: Callable[[], object]
    optimizer: torch.optim.Optimizer | None = None


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
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
        torch.backends.cudnn.allow_tf32 = precision == "tf32"
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
    """torch.autocast for bf16/fp16, a no-op context for fp32/tf32."""
    dtype = _AMP_DTYPES.get(precision)
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


@contextlib.contextmanager
def prepare(config: Config, seed: int = 0) -> Iterator[Prepared]:
    """Build, place and (optionally) compile the model for ``config``; restore global flags after.

    The same preparation serves measure(), the pytest benchmarks and the profiler.
    """
    device = validate_config(config)
    with numerics(config.precision, device):
        torch.manual_seed(seed)
        memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        model = build_model(config.model).to(device=device, memory_format=memory_format)
        size = config.image_size
        inputs = torch.randn(config.batch_size, 3, size, size, device=device)
        inputs = inputs.contiguous(memory_format=memory_format)
        labels = torch.randint(0, model.fc.out_features, (config.batch_size,), device=device)
        runner = model
        if config.compile != "off":
            runner = torch.compile(
                model, mode=None if config.compile == "default" else config.compile
            )

        def amp():
            return autocast(device, config.precision)

        optimizer = None
        if config.mode == "inference":
            model.eval()

            def step():
                with torch.inference_mode(), amp():
                    return runner(inputs)

        else:
            model.train()
            optimizer = torch.optim.SGD(
                model.parameters(), lr=TRAIN_LR, momentum=0.9, weight_decay=5e-4
            )
            scaler = torch.amp.GradScaler(device.type) if config.precision == "fp16" else None

            def step():
                with amp():
                    logits = runner(inputs)
                    with record_function(LOSS_LABEL):
                        loss = F.cross_entropy(logits, labels)
                if scaler is None:
                    loss.backward()
                    with record_function(OPTIMIZER_LABEL):
                        optimizer.step()
                        optimizer.zero_grad(set_to_none=True)
                else:  # fp16 needs loss scaling to keep small gradients representable
                    scaler.scale(loss).backward()
                    with record_function(OPTIMIZER_LABEL):
                        scaler.step(optimizer)
                        scaler.update()
                        optimizer.zero_grad(set_to_none=True)
                return loss

        yield Prepared(config, device, model, runner, inputs, labels, step, optimizer)


class PeakMemory:
    """Peak memory over the measured iterations; see the module docstring for the methods."""

    def __init__(self, device: torch.device, baseline_rss: int | None = None) -> None:
        """Create before the model is built: the CPU methods count growth over this moment's RSS."""
        if baseline_rss is None:
            free_memory(device)
            baseline_rss = psutil.Process().memory_info().rss
        self.device, self.baseline_rss = device, baseline_rss
        self.method: str | None = None
        self._sampled = 0
        self._proc = psutil.Process()

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.method = "cuda_max_memory_allocated"
        elif self.device.type == "mps":
            self.method = "mps_driver_allocated"
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
                self.method = "rss_hwm_growth"
            except OSError:
                self.method = "rss_sampled_growth"

    def sample(self) -> None:
        if self.method == "rss_sampled_growth":
            self._sampled = max(self._sampled, self._proc.memory_info().rss)

    def peak_mb(self) -> float:
        if self.method == "cuda_max_memory_allocated":
            return torch.cuda.max_memory_allocated(self.device) / 1e6
        if self.method == "mps_driver_allocated":
            return torch.mps.driver_allocated_memory() / 1e6
        if self.method == "rss_hwm_growth":
            status = Path("/proc/self/status").read_text()
            hwm_kb = next(
                int(ln.split()[1]) for ln in status.splitlines() if ln.startswith("VmHWM")
            )
            return max(0, hwm_kb * 1024 - self.baseline_rss) / 1e6
        return max(0, self._sampled - self.baseline_rss) / 1e6


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def measure(
    config: Config,
    budget_s: float = 2.0,
    *,
    max_warmup_s: float | None = None,
    peak: bool | float = True,
) -> Result:
    """Measure one Config: warm up until settled, then sample until the median is known to ~1%.

    Args:
        budget_s: time for the measured region (at least 3 iterations are always run).
        max_warmup_s: cap on warm-up after the first call; default max(2 s, 2 x budget).
        peak: True to measure the device's matmul peak (cached per process) for MFU, a number to
            use that peak (TFLOP/s) as it is, False for no MFU.
    """
    device = validate_config(config)
    max_warmup_s = max(2.0, 2 * budget_s) if max_warmup_s is None else max_warmup_s
    count = flops.count_flops(config.model, config.image_size, config.mode)
    forward = flops.count_flops(config.model, config.image_size, "inference")
    common = {
        "params": flops.count_params(config.model),
        "gflops_per_image": forward.gflops,
        "gflops_per_step": count.gflops * config.batch_size,
        "threads": torch.get_num_threads(),
        "effective_batch_size": config.batch_size,
        "device_name": device_name(device),
    }
    memory = PeakMemory(device)
    failure: tuple[str, str] | None = None
    prepared = None
    try:
        with prepare(config) as prepared:
            flags = {
                "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
                "tf32_cudnn": torch.backends.cudnn.allow_tf32,
                "cudnn_benchmark": torch.backends.cudnn.benchmark,
            }
            if device.type != "cuda":
                flags = {k: None for k in flags}
            # the first call compiles (torch.compile) or initialises lazily (cuDNN, oneDNN)
            t0 = time.perf_counter()
            prepared.step()
            timing.synchronize(device)
            first_s = time.perf_counter() - t0
            warm, warm_s = timing.warmup(prepared.step, device, max_warmup_s)
            memory.start()
            with power.Meter(device) as meter, timing.ForeignCpu() as foreign:
                samples = timing.autorange(
                    prepared.step, device, budget_s, float(warm.samples_ms[-1]), min_iters=3
                )
                memory.sample()
            peak_mb = memory.peak_mb()
    except Exception as exc:  # failure is data: the caller's other Results must survive
        failure = ("oom" if is_oom(exc) else "error", f"{type(exc).__name__}: {exc}".strip())
    prepared = None  # drop the model; the next PeakMemory() frees the rest before its baseline
    if failure is not None:
        free_memory(device)  # an OOM must not leave its tensors (or a fragmented cache) behind
        status, message = failure
        return Result.for_config(
            config, status=status, error=message[:2000], timestamp=utc_now(), **common
        )
    s = timing.stats(samples.samples_ms)
    achieved = common["gflops_per_step"] / (s.median / 1e3) / 1e3
    if peak is True:
        peak_tflops = flops.measure_peak_tflops(device, config.precision)
    else:
        peak_tflops = float(peak) if peak else None
    return Result.for_config(
        config,
        latency_ms_median=s.median,
        latency_ms_p10=s.p10,
        latency_ms_p90=s.p90,
        latency_ms_p99=s.p99,
        latency_ms_iqr=s.iqr,
        iterations=len(samples.samples_ms),
        throughput_ips=config.batch_size / (s.median / 1e3),
        tflops_achieved=achieved,
        peak_tflops=peak_tflops,
        mfu=achieved / peak_tflops if peak_tflops else None,
        peak_memory_mb=peak_mb,
        peak_memory_method=memory.method,
        compile_time_s=first_s if config.compile != "off" else 0.0,
        warmup_s=first_s + warm_s,
        measure_s=samples.wall_s,
        host_ms_per_iter=samples.host_ms_per_iter(),
        issue_ms_per_iter=samples.issue_ms_per_iter(),
        noisy=s.noisy,
        foreign_cpu=foreign.cores,
        **meter.fields(len(samples.samples_ms) * config.batch_size),
        timestamp=utc_now(),
        samples_ms=samples.samples_ms,
        **flags,
        **common,
    )
