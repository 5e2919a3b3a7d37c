"""Environment capture: what a number was measured on, so runs from different machines are told apart.

Usage: ``python -m resbench.env`` prints the JSON that every run folder stores as ``env.json``.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import datetime as _dt
import functools
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from resbench import __version__


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the checkout resbench runs from (with "-dirty" if modified), or None."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        )
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# the CPU flags that decide which arithmetic is native: bf16 dot products (AVX512-BF16, AMX,
# AVX-NE-CONVERT), int8 dot products (VNNI, AMX) and the vector width
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "avx_vnni",
             "avx_ne_convert", "amx_tile", "amx_bf16", "amx_int8")  # fmt: skip


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as the kernel reports them (/proc/cpuinfo, what lscpu shows)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def onednn_convolutions(lines: Sequence[str]) -> list[tuple[str, str | None]]:
    """(implementation, source data type) of each convolution oneDNN's verbose log says it ran:
    ("brg_conv_fwd:avx10_1_512_amx", "bf16"). The data type is read from the line's memory
    descriptors ("src:bf16::blocked..." since oneDNN 3.x, "src_bf16::blocked..." before), never
    from the implementation's name, which names the instruction set ("avx10_1_512_amx") and not
    always the type."""
    out = []
    for line in lines:
        parts = line.strip().split(",")
        if "exec" not in parts or "convolution" not in parts:
            continue
        at = parts.index("convolution")
        if at + 1 >= len(parts):
            continue
        src = None
        for part in parts[at + 2 :]:
            for word in part.split():
                if word.startswith(("src:", "src_")):
                    src = word[4:].split(":", 1)[0] or None
                    break
            if src:
                break
        out.append((parts[at + 1], src))
    return out


def user_verbose_level() -> int:
    """The oneDNN verbose level the user asked for (ONEDNN_VERBOSE, or DNNL_VERBOSE), 0 if none:
    what the log is set back to after resbench reads it, so a user's check still works."""
    for name in ("ONEDNN_VERBOSE", "DNNL_VERBOSE"):
        value = os.environ.get(name, "").strip()
        if value:
            try:
                return int(value)
            except ValueError:
                return 1  # "all", "dispatch"...: something on
    return 0


def onednn_log(fn: Callable[[], object]) -> tuple[object, list[str]]:
    """(fn(), the lines oneDNN's verbose log printed during it). oneDNN prints through the C
    library's stdout, so file descriptor 1 is pointed at a temporary file for the call. The user's
    own verbose level is set back after (``torch.backends.mkldnn.verbose`` would switch it off for
    the whole process), and where it was on the captured lines are printed again for them."""
    fd = 1
    with contextlib.suppress(AttributeError, OSError, ValueError):
        sys.stdout.flush()
    level = user_verbose_level()
    saved = os.dup(fd)
    try:
        with tempfile.TemporaryFile() as log:
            os.dup2(log.fileno(), fd)
            try:
                torch._C._verbose.mkldnn_set_verbose(torch.backends.mkldnn.VERBOSE_ON)
                out = fn()
            finally:
                torch._C._verbose.mkldnn_set_verbose(level)
                with contextlib.suppress(OSError, AttributeError):
                    ctypes.CDLL(None).fflush(None)  # what the C library still buffers
                os.dup2(saved, fd)
            log.seek(0)
            text = log.read().decode(errors="replace")
    finally:
        os.close(saved)
    if level and text:
        sys.stdout.write(text)
        sys.stdout.flush()
    return out, text.splitlines()


@functools.lru_cache(maxsize=4)
def onednn_convolution(dtype: torch.dtype = torch.bfloat16) -> tuple[str, str | None] | None:
    """(implementation, source data type) oneDNN runs a small convolution in ``dtype`` with, as
    its verbose log names them (``onednn_convolutions``), or None where oneDNN did not run it
    (PyTorch's own, slower kernel) or the log could not be read."""
    if not torch.backends.mkldnn.is_available():
        return None
    # channels_last: PyTorch hands even a small NHWC convolution to oneDNN
    nhwc = torch.channels_last
    x = torch.randn(1, 32, 28, 28).to(dtype).contiguous(memory_format=nhwc)
    w = torch.randn(32, 32, 3, 3).to(dtype).contiguous(memory_format=nhwc)
    _, lines = onednn_log(lambda: torch.nn.functional.conv2d(x, w))
    found = onednn_convolutions(lines)
    return found[0] if found else None


NATIVE = "no oneDNN convolution (PyTorch's native kernels)"


def kernels_of(lines: Sequence[str]) -> dict:
    """What one call of a row ran, from oneDNN's verbose lines: ``compute_kernel`` (the commonest
    convolution implementation, None where oneDNN ran none), ``kernels`` ("brg_conv_fwd:avx2
    17/20, jit_1x1:avx2 3/20", or NATIVE) and ``reorders`` (layout conversions in the call, the
    cost of a layout oneDNN does not compute in)."""
    convs = [kernel for kernel, _ in onednn_convolutions(lines)]
    reorders = sum(
        1 for line in lines if "exec" in line.split(",") and "reorder" in line.split(",")
    )
    if not convs:
        return {"compute_kernel": None, "kernels": NATIVE, "reorders": reorders}
    counts = collections.Counter(convs).most_common()
    summary = ", ".join(f"{kernel} {n}/{len(convs)}" for kernel, n in counts)
    return {"compute_kernel": counts[0][0], "kernels": summary, "reorders": reorders}


def onednn_kernel(dtype: torch.dtype = torch.bfloat16) -> str | None:
    """The implementation of ``onednn_convolution`` ("jit_bf16:avx512_core_bf16",
    "brg_conv_fwd:avx2"), or None where oneDNN did not run it."""
    found = onednn_convolution(dtype)
    return found[0] if found else None


def cpu_isa() -> dict:
    """What decides the CPU's arithmetic: its flags of interest, PyTorch's vector capability and
    the kernels oneDNN runs in fp32 and bf16."""
    return {
        "cpu_flags": [f for f in ISA_FLAGS if f in cpu_flags()],
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn_fp32_kernel": onednn_kernel(torch.float32),
        "onednn_bf16_kernel": onednn_kernel(torch.bfloat16),
    }


def torchvision_version() -> str | None:
    """torchvision's installed version, read from its metadata: importing it costs ~1.5 s of
    every sweep, trainer and benchmark process that never uses it."""
    try:
        return importlib.metadata.version("torchvision")
    except importlib.metadata.PackageNotFoundError:
        return None


def numerics_flags() -> dict:
    """Global switches that silently change results: TF32, cuDNN autotuning, matmul precision."""
    return {
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
    }


def nvml_gpus() -> dict:
    """NVIDIA driver version and, per GPU in NVML's (PCI) order, its enforced power limit.

    Empty values where NVML is absent: nvidia-ml-py not installed, no driver, no GPU.
    """
    try:
        import pynvml as nvml
    except ImportError:
        return {"nvidia_driver": None, "nvml_gpus": []}
    try:
        nvml.nvmlInit()
    except nvml.NVMLError:
        return {"nvidia_driver": None, "nvml_gpus": []}

    def read(fn, *args):
        try:
            value = fn(*args)
        except nvml.NVMLError:
            return None
        return value.decode() if isinstance(value, bytes) else value

    try:
        gpus = []
        for i in range(read(nvml.nvmlDeviceGetCount) or 0):
            handle = read(nvml.nvmlDeviceGetHandleByIndex, i)
            if handle is None:
                continue
            pci = read(nvml.nvmlDeviceGetPciInfo, handle)
            limit_mw = read(nvml.nvmlDeviceGetEnforcedPowerLimit, handle)
            bus_id = getattr(pci, "busId", None)
            gpus.append({
                "nvml_index": i,
                "name": read(nvml.nvmlDeviceGetName, handle),
                "pci_bus_id": bus_id.decode() if isinstance(bus_id, bytes) else bus_id,
                "power_limit_w": limit_mw / 1e3 if limit_mw is not None else None,
            })  # fmt: skip
        return {"nvidia_driver": read(nvml.nvmlSystemGetDriverVersion), "nvml_gpus": gpus}
    finally:
        with contextlib.suppress(nvml.NVMLError):
            nvml.nvmlShutdown()


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")  # what PyTorch's default count obeys
RUNTIMES = ("onnxruntime", "onnxruntime-gpu", "openvino", "onnx", "onnxscript", "nvidia-ml-py")


def runtime_versions() -> dict:
    """The installed versions of the optional runtimes the backends use (none imported)."""
    found = {}
    for name in RUNTIMES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    return found


def collect_env() -> dict:
    """A JSON-serialisable description of the software and hardware; cheap to call (the oneDNN
    probe is two tiny convolutions, once per process)."""
    cuda = torch.cuda.is_available()
    devices = (
        [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []
    )
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    return {
        "resbench": __version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision_version(),
        "runtimes": runtime_versions(),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cuda_available": cuda,
        "gpu_count": len(devices),
        "gpu_names": devices,
        "mps_available": mps,
        **nvml_gpus(),
        "cpu": cpu_model(),
        **cpu_isa(),
        "logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        # what set the thread count, where not the machine: a run under OMP_NUM_THREADS=1 keys its
        # rows on 1 thread, not on "the machine's default" (report.matching)
        "thread_env": {k: os.environ[k] for k in THREAD_VARIABLES if k in os.environ},
        "os": f"{platform.system()} {platform.release()}",
        "hostname": platform.node(),
        **numerics_flags(),
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def record(path: Path, **values) -> dict:
    """Merge ``values`` (device probes measured during a run) into the env.json at ``path``."""
    env = json.loads(path.read_text()) if path.exists() else {}
    for key, value in values.items():
        env[key] = (env.get(key) or {}) | value if isinstance(value, dict) else value
    path.write_text(json.dumps(env, indent=2) + "\n")
    return env


def main(argv: Sequence[str] | None = None) -> int:
    del argv
    json.dump(collect_env(), sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
