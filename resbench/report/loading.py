"""Reading runs: a run folder (``results.jsonl``, ``env.json``) or a pytest-benchmark JSON -> Results.

Older runs that lack newer Result fields load with those fields at their defaults; a field another
engineer's run adds (``backend``, ``images_per_joule``, ``repeat_spread``...) is read with ``field``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from resbench import runfolder
from resbench.datamodel import fork_groups, fork_medians
from resbench.engine import timing
from resbench.engine.measure import Result
from resbench.runfolder import ENV_FILE, MAX_BATCH_FILE, RESULTS_FILE  # noqa: F401 (their home)

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
    "forks": None,
    "fork_spread": None,
    "peak_probe": None,
    "peak_exceeded": None,
    "agreement_inputs": None,
    "kernels": None,
    "reorders": None,
    "kernels_read": None,
}


def beat_peak(peak_exceeded, mfu) -> bool:
    """Whether a row ran faster than its peak probe: flagged ``peak_exceeded``, or an MFU above 1
    (a row from before the flag, or one built in memory). Its MFU is never shown: a probe defect."""
    if peak_exceeded is not None and pd.notna(peak_exceeded) and bool(peak_exceeded):
        return True
    try:
        return float(mfu) > 1
    except (TypeError, ValueError):
        return False


def field(result: Result, name: str):
    """A Result's field, or its default when this Result's class predates the field."""
    return getattr(result, name, OPTIONAL_FIELDS.get(name))


def read_jsonl(path: Path) -> list[dict]:
    """Every JSON-object line of ``path``; others are skipped with a warning naming file and line."""
    return [row for _, row in runfolder.read_jsonl(Path(path))]


def read_results_file(path: Path) -> list[Result]:
    return runfolder.read_results_file(Path(path))


def read_results(run_dir: Path) -> list[Result]:
    """The run's Results, the latest per Config (a retried error supersedes the old one)."""
    return runfolder.read_results(run_dir)


def read_env(run_dir: Path) -> dict:
    return runfolder.read_env(run_dir)


def read_max_batch(run_dir: Path) -> list[dict]:
    """The largest-batch searches of ``sweep --find-max-batch``, if the run made any."""
    path = Path(run_dir) / MAX_BATCH_FILE
    return json.loads(path.read_text()) if path.exists() else []


def read_max_accuracy_drop(run_dir: Path) -> float | None:
    """The ``max_accuracy_drop`` (points) the sweep recorded in the run's options (run.json), or
    None where it recorded none (not given, or a run from before the flag): the default then."""
    value = runfolder.recorded_options(Path(run_dir)).get("max_accuracy_drop")
    if value is None:
        return None
    number = value if isinstance(value, int | float) and not isinstance(value, bool) else math.nan
    if not math.isfinite(number) or number < 0:
        raise ValueError(
            f"{Path(run_dir) / runfolder.RUN_FILE} records max_accuracy_drop {value!r}, not a "
            "finite number of points of 0 or more; give the report --max-accuracy-drop POINTS"
        )
    return float(number)


def read_invocations(run_dir: Path) -> list[dict]:
    """Every command that wrote to the run (its start, then each --resume), from run.json: command,
    started and resume of each; [] without run.json, or where it is damaged (the report of a run
    does not fail on its record: a resume names the damage)."""
    try:
        record = runfolder.read_record(Path(run_dir))
    except ValueError:
        return []
    keep = ("command", "started", "resume")
    return [
        {k: entry.get(k) for k in keep}
        for entry in record.get("invocations", [])
        if isinstance(entry, dict) and entry.get("command")
    ]


def load_run(run_dir: Path) -> tuple[dict, list[Result], list[dict]]:
    """A run folder's environment, Results and largest-batch searches: the one place runs are read.

    The environment carries ``invocations`` (``read_invocations``) where the run was resumed, so
    that the report names every command whose Results it holds, not only the first."""
    env, invocations = read_env(run_dir), read_invocations(run_dir)
    if len(invocations) > 1:
        env = {**env, "invocations": invocations}
    return env, read_results(run_dir), read_max_batch(run_dir)


def setting_label(result: Result) -> str:
    """The Result's setting as the tables label it: "bf16+cl", "int8+openvino"."""
    return result.setting


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
    # one preparation has no spread between preparations to show
    frame.loc[frame["repeats"].fillna(1) <= 1, "repeat_spread"] = None
    frame.loc[frame["forks"].fillna(1) <= 1, "fork_spread"] = None  # one process: no spread
    # MFU is never above 100%: a row that beat its peak is flagged and its MFU not shown
    over = [beat_peak(f, m) for f, m in zip(frame["peak_exceeded"], frame["mfu"], strict=True)]
    frame["peak_exceeded"] = frame["peak_exceeded"].astype(object)
    frame.loc[over, "peak_exceeded"] = True
    frame.loc[over, "mfu"] = None
    return with_fork_percentiles(frame, results)


PERCENTILES = ("latency_ms_p10", "latency_ms_p90", "latency_ms_p99", "latency_ms_iqr")
HEADLINE = ("throughput_ips", "latency_ms_median", "tflops_achieved", "mfu", "images_per_joule")


def disagreement(result: Result) -> str:
    """ "forks disagree: 1.40 ms and 299.6 ms" where a row's fork medians are more than
    ``timing.FORKS_DISAGREE`` apart, else ""."""
    medians = fork_medians(result)
    if result.status != "ok" or not timing.forks_disagree(medians):
        return ""
    lo, hi = min(medians), max(medians)
    joint = "and" if len(medians) == 2 else "to"
    return f"forks disagree: {_ms(lo)} ms {joint} {_ms(hi)} ms"


def _ms(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def with_fork_percentiles(frame: pd.DataFrame, results: Sequence[Result]) -> pd.DataFrame:
    """Rows of several forks: percentiles with each fork weighted equally, as the headline median
    weights them (a row written before ``fork_samples`` pooled every sample: its forks are
    recovered from their medians, else its percentiles are unknown, never pooled), and no
    headline figure where the forks disagree (``forks_disagree`` says why instead)."""
    frame["forks_disagree"] = [disagreement(r) or None for r in results]
    for i, r in enumerate(results):
        if r.status != "ok" or len(fork_medians(r)) < 2:
            continue
        if not getattr(r, "fork_samples", None):
            groups = fork_groups(r)
            s = timing.fork_stats(groups) if len(groups) >= 2 else None
            values = [s.p10, s.p90, s.p99, s.iqr] if s else [np.nan] * len(PERCENTILES)
            frame.loc[frame.index[i], list(PERCENTILES)] = values
        if isinstance(frame.at[frame.index[i], "forks_disagree"], str):
            frame.loc[frame.index[i], [*HEADLINE, *PERCENTILES]] = np.nan
    return frame


def load_pytest_benchmark(path: Path) -> tuple[dict, list[Result]]:
    """Results from a pytest-benchmark JSON saved by resbench's benchmarks (their extra_info)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not a pytest-benchmark JSON file ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise ValueError(
            f"{path} is not a pytest-benchmark JSON file (an object with a list of benchmarks); "
            "save one with `pytest benchmarks --benchmark-autosave`"
        )
    results = []
    for bench in data["benchmarks"]:
        if not isinstance(bench, dict):
            continue
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
    if not results:
        raise ValueError(f"{path} holds no resbench benchmark (none has a model in its extra_info)")
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
