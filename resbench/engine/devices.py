"""Devices: parsing and names, out-of-memory detection, memory (free, peak) and the CPU allocator.

Peak memory: on CUDA, ``max_memory_allocated`` after ``reset_peak_memory_stats`` (tensors alive at the
peak of the measured iterations: weights, inputs, optimizer state, activations, workspaces). On Linux
CPUs, the growth of the process's peak resident set (``VmHWM``, reset through ``/proc/self/clear_refs``)
over its resident set before the model was built, after ``gc`` and ``malloc_trim``: the same quantities
as on CUDA, plus oneDNN's caches. Elsewhere on CPUs the resident set sampled after each block (a lower
bound); on MPS the driver's allocated memory after the run. ``PeakMemory.method`` says which.

The CPU allocator: with its default, adaptive thresholds glibc's malloc hands the pages of a large
freed block back to the kernel whenever the free space at the top of the heap passes its trim
threshold. Whether a model's activations end up there depends on the process's allocation history,
so in some processes every iteration faults its activations in again: 12,000-25,000 minor page
faults per resnet18 batch-8 forward on a 2-core AMD EPYC, 10-30% slower than in a process where
they do not (scripts/clock_check.py shows it). ``steady_allocator()`` fixes both thresholds high, as
jemalloc and tcmalloc keep freed memory by design, so that every process measures the steady state.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
from pathlib import Path

import psutil
import torch

from resbench import env

# mallopt parameters (glibc's malloc.h); 1 GiB: blocks below it stay in the process once freed
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
STEADY_THRESHOLD_BYTES = 1 << 30
# set RESBENCH_MALLOC=system to keep glibc's adaptive thresholds (and measure their cost)
MALLOC_ENV = "RESBENCH_MALLOC"
_allocator_state: str | None = None


def mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def default_device() -> str:
    """The best available device: cuda, then mps, then cpu."""
    if torch.cuda.is_available():
        return "cuda"
    return "mps" if mps_available() else "cpu"


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


# PyTorch's intra-op threads as this process began (all the cores, or OMP_NUM_THREADS): what a
# Config's threads default to, read before any row sets its own
DEFAULT_THREADS = torch.get_num_threads()


def default_threads(streams: int = 1) -> int:
    """Intra-op threads per stream when a Config gives none: the process's default threads shared
    out between the streams (at least 1 each), as OpenVINO's throughput hint does."""
    return max(1, DEFAULT_THREADS // max(1, streams))


@contextlib.contextmanager
def intra_op_threads(threads: int):
    """PyTorch's intra-op threads set to ``threads`` for a row; restored after. Threads started
    inside (a scenario's streams) take this count for their own OpenMP team on first use."""
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    return env.cpu_model()


# hardware bf16 dot products on CPUs: without one of them PyTorch only emulates bf16 (on AVX2 many
# times slower than fp32) and OpenVINO computes its "bf16" in fp32
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "avx_ne_convert")
# tensor-core precisions and the compute capability that brought them (Ampere: 8.0)
CUDA_MIN_CAPABILITY = {"tf32": 8, "bf16": 8}


def emulated(device: torch.device, precision: str) -> str | None:
    """Why PyTorch would only emulate ``precision`` on ``device`` (it has no units for it), or None."""
    if device.type == "cpu" and precision == "bf16" and not set(CPU_BF16_FLAGS) & env.cpu_flags():
        return (
            f"this CPU has no bf16 units (none of {', '.join(CPU_BF16_FLAGS)} in its flags): "
            "PyTorch only emulates bf16 here, far slower than fp32"
        )
    if device.type == "cuda" and precision in CUDA_MIN_CAPABILITY:
        major, minor = torch.cuda.get_device_capability(device)
        if major < CUDA_MIN_CAPABILITY[precision]:
            return (
                f"{device_name(device)} (compute capability {major}.{minor}) has no {precision} "
                "tensor cores"
            )
    return None


def torch_precision(device: torch.device, precision: str) -> str:
    """What PyTorch computes in for ``precision`` on ``device``, read back from its switches (call
    it inside ``settings.numerics``): "fp32", "tf32", "bf16", "fp16", or "bf16-emulated"."""
    if device.type == "cuda" and precision in ("fp32", "tf32"):
        on = torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32
        return "tf32" if on and emulated(device, "tf32") is None else "fp32"
    return f"{precision}-emulated" if emulated(device, precision) else precision


def is_oom(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or the CPU allocator's failure to allocate."""
    oom_type = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    if isinstance(exc, oom_type | MemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text or "Failed to allocate" in text
    )


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl)
        return None


def free_memory(device: torch.device | None = None) -> None:
    gc.collect()
    if torch.cuda.is_available() and (device is None or device.type == "cuda"):
        torch.cuda.empty_cache()
    if device is not None and device.type == "mps":
        torch.mps.empty_cache()
    malloc_trim()


def malloc_trim() -> None:
    """Return freed heap memory to the OS (glibc), so the resident set reflects live memory."""
    libc = _libc()
    with contextlib.suppress(AttributeError):
        if libc is not None:
            libc.malloc_trim(0)


def steady_allocator() -> str:
    """Fix glibc's trim and mmap thresholds (once per process) so freed activations stay mapped.

    Returns what the process's allocator does, for env.json and the Result.
    """
    global _allocator_state
    if _allocator_state is None:
        _allocator_state = _set_steady_allocator()
    return _allocator_state


def _set_steady_allocator() -> str:
    if os.environ.get(MALLOC_ENV, "").lower() == "system":
        return f"system ({MALLOC_ENV}=system)"
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES (the user's)"
    libc = _libc()
    if libc is None or not hasattr(libc, "mallopt"):
        return "system (not glibc)"
    ok = all(
        libc.mallopt(p, STEADY_THRESHOLD_BYTES) for p in (_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD)
    )
    return "glibc, trim/mmap thresholds 1 GiB" if ok else "system (mallopt refused)"


def pool_forks(first, new) -> dict:
    """The memory of processes' Results as one: the largest peak any of them reached."""
    peaks = (first.peak_memory_mb, new.peak_memory_mb)
    return {"peak_memory_mb": max((m for m in peaks if m is not None), default=None)}


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
