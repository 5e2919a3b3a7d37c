"""Reading runs: a run folder (``results.jsonl``, ``env.json``) or a pytest-benchmark JSON -> Results.

Older runs that lack newer Result fields load with those fields at their defaults; a field another
engineer's run adds (``backend``, ``images_per_joule``, ``repeat_spread``...) is read with ``field``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from resbench.measure import Result

RESULTS_FILE = "results.jsonl"
ENV_FILE = "env.json"
MAX_BATCH_FILE = "max_batch.json"  # written by `sweep --find-max-batch`
RESULT_FIELDS = [f.name for f in dataclasses.fields(Result)]
# fields that newer Results carry; a run without them shows these defaults
OPTIONAL_FIELDS = {
    "backend": "eager",
    "max_abs_diff": None,
    "top1_agreement": None,
    "images_per_joule": None,
    "avg_power_w": None,
    "joules_per_image": None,
    "throttled": None,
    "throttle_reasons": None,
    "repeats": None,
    "repeat_spread": None,
}


def field(result: Result, name: str):
    """A Result's field, or its default when this Result's class predates the field."""
    return getattr(result, name, OPTIONAL_FIELDS.get(name))


def read_jsonl(path: Path) -> list[dict]:
    """Every complete JSON line of ``path``; a truncated or corrupt line is skipped with a warning."""
    rows = []
    if not path.exists():
        return rows
    with path.open("r", encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                warnings.warn(
                    f"{path}:{number}: skipping an incomplete line (a run killed mid-write?)",
                    stacklevel=2,
                )
    return rows


def repair_jsonl(path: Path) -> None:
    """Cut a trailing partial line (from a kill mid-write) so appended lines start clean."""
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return
    cut = data.rfind(b"\n") + 1
    warnings.warn(f"{path}: dropping a truncated last line ({len(data) - cut} bytes)", stacklevel=2)
    with path.open("r+b") as f:
        f.truncate(cut)


def read_results_file(path: Path) -> list[Result]:
    return [Result.from_dict(row) for row in read_jsonl(Path(path))]


def read_results(run_dir: Path) -> list[Result]:
    return read_results_file(Path(run_dir) / RESULTS_FILE)


def read_env(run_dir: Path) -> dict:
    path = Path(run_dir) / ENV_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def load_run(run_dir: Path) -> tuple[dict, list[Result], list[dict]]:
    """A run folder's environment, Results and largest-batch searches: the one place runs are read."""
    run_dir = Path(run_dir)
    path = run_dir / MAX_BATCH_FILE
    max_batch = json.loads(path.read_text()) if path.exists() else []
    return read_env(run_dir), read_results(run_dir), max_batch


def setting_label(result: Result) -> str:
    """The Result's setting, with its backend when it is not eager: "bf16+cl", "fp32 onnxruntime"."""
    backend = field(result, "backend") or "eager"
    return result.setting if backend == "eager" else f"{result.setting} {backend}"


def results_frame(results: Sequence[Result]) -> pd.DataFrame:
    """One row per Result, every field a column (newer fields filled in), plus ``setting``."""
    rows = []
    for r in results:
        row = r.to_dict()
        for name, default in OPTIONAL_FIELDS.items():
            row.setdefault(name, default)
        rows.append(row)
    columns = list(dict.fromkeys([*RESULT_FIELDS, *OPTIONAL_FIELDS]))
    frame = pd.DataFrame(rows, columns=columns)
    frame["setting"] = [setting_label(r) for r in results]
    return frame


def load_pytest_benchmark(path: Path) -> tuple[dict, list[Result]]:
    """Results from a pytest-benchmark JSON saved by resbench's benchmarks (their extra_info)."""
    data = json.loads(Path(path).read_text())
    results = []
    for bench in data.get("benchmarks", []):
        info = dict(bench.get("extra_info") or {})
        if "model" not in info:
            continue  # not one of resbench's benchmarks
        stats = bench.get("stats", {})
        samples_ms = [t * 1e3 for t in stats.get("data", [])]
        median_ms = stats["median"] * 1e3
        iqr_ms = stats.get("iqr", math.nan) * 1e3
        info.update(
            latency_ms_median=median_ms,
            latency_ms_iqr=iqr_ms,
            iterations=stats.get("rounds"),
            throughput_ips=info.get("batch_size", 0) / (median_ms / 1e3),
            noisy=bool(iqr_ms / median_ms > 0.10),
            samples_ms=samples_ms,
        )
        if info.get("gflops_per_step"):
            info["tflops_achieved"] = info["gflops_per_step"] / median_ms  # GFLOP/ms = TFLOP/s
        if samples_ms:  # saved with --benchmark-save-data; else the benchmark's own percentiles
            p10, p90, p99 = np.percentile(samples_ms, [10, 90, 99])
            info.update(latency_ms_p10=p10, latency_ms_p90=p90, latency_ms_p99=p99)
        results.append(Result.from_dict(info))
    machine = data.get("machine_info", {})
    env = dict(machine.get("resbench", {}))
    env.setdefault("cpu", (machine.get("cpu") or {}).get("brand_raw"))
    env["source"] = f"pytest-benchmark {data.get('version', '')}: {path}"
    return env, results


def load(path: Path) -> tuple[dict, list[Result]]:
    """A run folder, or a pytest-benchmark JSON file."""
    path = Path(path)
    if path.is_dir():
        if not (path / RESULTS_FILE).exists():
            raise ValueError(f"{path} is not a run folder: it has no {RESULTS_FILE}")
        env, results, _ = load_run(path)
        return env, results
    if path.suffix == ".json" and path.exists():
        return load_pytest_benchmark(path)
    raise ValueError(f"{path} is neither a run folder nor a pytest-benchmark .json file")
