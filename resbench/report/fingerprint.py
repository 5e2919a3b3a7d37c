"""What decides a machine's arithmetic, read off a run, and where two runs' machines differ.

Two hosts can share a CPU name ("AMD EPYC") and differ 2.3x in what they compute: one has AVX512-BF16
or AMX and the other not, oneDNN picks other kernels, the peak probe and the copy bandwidth differ.
A comparison across them speaks of the hosts, not the code, and says so at the top. The fingerprint
of a run: the CPU and GPUs, the CPU's arithmetic flags, oneDNN's fp32 and bf16 kernels, the peak
probe per device and precision (the median of the rows' ``peak_tflops``), the copy bandwidth per
device, the thread and core counts, the float32 matmul precision, and the torch, CUDA, cuDNN and
runtime versions. Measured figures differ when they are more than PROBE_RATIO apart (a host drifts
10-20% between processes); the rest when they are not equal. A field one run did not record is
named apart, as unknown, never as equal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from resbench.datamodel import Result

PROBE_RATIO = 1.25  # measured probes further apart than this are a different machine's
_EXACT = (
    ("cpu", "CPU"),
    ("gpu_names", "GPUs"),
    ("cpu_flags", "CPU flags"),
    ("onednn_fp32_kernel", "oneDNN fp32 kernel"),
    ("onednn_bf16_kernel", "oneDNN bf16 kernel"),
    ("torch_threads", "threads"),
    ("logical_cores", "cores"),
    ("float32_matmul_precision", "float32 matmul precision"),
    ("torch", "torch"),
    ("cuda", "CUDA"),
    ("cudnn", "cuDNN"),
)
RUNTIMES = ("onnxruntime", "onnxruntime-gpu", "openvino")


def fingerprint(env: dict, results: Sequence[Result]) -> tuple[dict, dict]:
    """(exact fields, measured probes) of a run: name -> value, None where not recorded."""
    exact = {label: env.get(name) for name, label in _EXACT}
    runtimes = env.get("runtimes")
    for name in RUNTIMES:
        exact[name] = runtimes.get(name) if isinstance(runtimes, dict) else None
    probes: dict[str, float | None] = {}
    peaks: dict[tuple[str, str], list[float]] = {}
    for r in results:
        value = getattr(r, "peak_tflops", None)
        if r.status == "ok" and isinstance(value, int | float) and math.isfinite(value):
            peaks.setdefault((r.device, r.precision), []).append(float(value))
    for (device, precision), values in sorted(peaks.items()):
        probes[f"peak probe {device} {precision} (TFLOP/s)"] = float(np.median(values))
    for device, gbs in (env.get("bandwidth_gbs") or {}).items():
        probes[f"copy bandwidth {device} (GB/s)"] = gbs
    return exact, probes


def _text(value) -> str:
    if isinstance(value, list | tuple):
        return " ".join(map(str, value)) or "none"
    return str(value)


def differences(new: tuple[dict, dict], old: tuple[dict, dict]) -> tuple[list[str], list[str]]:
    """(differences, fields recorded on one side only) between two fingerprints, in words."""
    (new_exact, new_probes), (old_exact, old_probes) = new, old
    diffs, unknown = [], []
    for label in new_exact:
        a, b = new_exact[label], old_exact.get(label)
        if a is None and b is None:
            continue
        if a is None or b is None:
            unknown.append(f"{label} ({'new' if a is None else 'old'} run)")
        elif label == "CPU flags" and set(a) != set(b):
            gained, lost = sorted(set(a) - set(b)), sorted(set(b) - set(a))
            change = [f"new has {' '.join(gained)}"] if gained else []
            change += [f"old has {' '.join(lost)}"] if lost else []
            diffs.append(f"CPU flags: {'; '.join(change)}")
        elif a != b:
            diffs.append(f"{label}: {_text(b)} -> {_text(a)}")
    for label in sorted(set(new_probes) | set(old_probes)):
        a, b = new_probes.get(label), old_probes.get(label)
        if a is None or b is None:
            continue  # a probe of a device or precision only one run used says nothing of the host
        if a > 0 and b > 0 and max(a / b, b / a) > PROBE_RATIO:
            diffs.append(f"{label}: {b:.3g} -> {a:.3g} ({a / b:.2f}x)")
    return diffs, unknown


def warning(
    new_env: dict, new: Sequence[Result], old_env: dict, old: Sequence[Result]
) -> str | None:
    """The comparison's warning when the machines differ (None when nothing recorded does)."""
    diffs, unknown = differences(fingerprint(new_env, new), fingerprint(old_env, old))
    if not diffs and not unknown:
        return None
    text = (
        "The machines differ in what decides the arithmetic, so a verdict speaks of the hosts, "
        "not only the code: " + "; ".join(diffs) + "."
        if diffs
        else "Nothing recorded on both sides tells the machines apart."
    )
    if unknown:
        text += " Recorded by one run only, so unknown: " + ", ".join(unknown) + "."
    return text
