"""Numbers derived from Results: speed-ups over the baseline, answers, the load rule, the roofline.

Everything here takes and returns data (DataFrames, strings); tables, plots and pages render it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from resbench.engine.measure import Result
from resbench.engine.timing import LOAD_ANY_CORES, LOAD_MEDIAN_CORES  # noqa: F401 (the report reads them here)
from resbench.report.loading import field, results_frame

BASELINE_SETTING = "fp32"  # fp32, contiguous, eager: the row every speed-up is over
# rows differ also by how calls were issued (issue 23): a speed-up or an answer compares settings at
# the same scenario, streams and intra-op threads, never a 1-thread row with a 2-thread one
ROW_KEY = ["device", "mode", "model", "image_size", "batch_size", "scenario", "streams", "threads"]
SINGLE_STREAM = (
    "single-stream"  # settings.DEFAULT_SCENARIO: one call at a time, the per-batch tables
)
# The load rule (thresholds in timing.py): a run was measured under load when the median Result saw
# LOAD_MEDIAN_CORES busy with other processes, or any one LOAD_ANY_CORES; a row at the first is loaded.
# a row far under both roofline ceilings is bound by overhead (launches, Python, small kernels)
OVERHEAD_FRACTION = 0.2
PRECISION_ORDER = ("fp32", "tf32", "bf16", "fp16", "int8")
# points of top-1 a setting may lose against fp32 eager and still be an answer (--max-accuracy-drop;
# MLPerf's ResNet-50 bound, 99% of fp32, is 0.76 points); the sweep and the report share it
MAX_ACCURACY_DROP = 1.0
DROP_TOLERANCE = 1e-9  # points: (0.92 - 0.91) * 100 is 1.0000000000000009, not past a bound of 1


def finite(value) -> float | None:
    """``value`` as a finite float, or None (for None, NaN, infinities, booleans and text)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def nonfinite(value) -> bool:
    """Whether ``value`` is a number that is NaN or infinite (not None, not text, not a boolean)."""
    if value is None or isinstance(value, bool):
        return False
    try:
        return not math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def ips_at_quartiles(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per row, images/s at its p75 latency (the low end) and at its p25 latency (the high end).

    From the row's raw ``samples_ms``; NaN where a row has none, so no error bar is drawn rather
    than a made-up one. images/s = batch_size / (latency_ms / 1e3), converted per point.
    """
    low, high = [], []
    for batch, samples in zip(frame["batch_size"], frame["samples_ms"], strict=True):
        times = np.asarray(samples if isinstance(samples, list | tuple | np.ndarray) else [], float)
        times = times[np.isfinite(times) & (times > 0)]
        if not len(times):
            low.append(math.nan)
            high.append(math.nan)
            continue
        p25, p75 = np.percentile(times, [25, 75])
        low.append(batch / (p75 / 1e3))
        high.append(batch / (p25 / 1e3))
    return np.asarray(low, float), np.asarray(high, float)


def one_off_s(frame: pd.DataFrame) -> pd.Series:
    """Each row's one-off cost in seconds, whatever the backend calls it: ``prepare_s`` (export,
    quantisation, session) plus ``compile_time_s`` (torch.compile compiles in its first call).

    NaN where neither is recorded: an unknown cost is never shown as 0.
    """
    parts = frame[["prepare_s", "compile_time_s"]].apply(pd.to_numeric, errors="coerce")
    return parts.sum(axis=1, min_count=1)


def row_loaded(foreign_cpu) -> bool:
    """Whether one Result was measured with other processes keeping LOAD_MEDIAN_CORES busy."""
    cores = finite(foreign_cpu)
    return cores is not None and cores >= LOAD_MEDIAN_CORES


def row_flagged(noisy, throttled) -> bool:
    """Noisy (IQR/median > 10%) or throttled (issue 17's power/thermal flag): not to be trusted."""
    return noisy is True or throttled is True


def headline(results: Sequence[Result]) -> str:
    """'58 results: 58 ok, of which 53 noisy or throttled, 53 under load' - never hiding either."""
    counts = pd.Series([r.status for r in results]).value_counts().to_dict() if results else {}
    parts = [f"{counts.get(s, 0)} {s}" for s in ("ok", "oom", "error", "skipped") if counts.get(s)]
    ok = [r for r in results if r.status == "ok"]
    flagged = sum(row_flagged(r.noisy, field(r, "throttled")) for r in ok)
    loaded = sum(row_loaded(r.foreign_cpu) for r in ok)
    unknown = sum(finite(r.foreign_cpu) is None for r in ok)
    text = f"{len(results)} results: " + (", ".join(parts) or "none")
    if ok:
        text += f"; of the {len(ok)} ok, {flagged} noisy or throttled and "
        if unknown == len(ok):
            text += "the load unknown (not recorded)"
        else:
            text += f"{loaded} under load"
            if unknown:
                text += f" (the load of {unknown} not recorded)"
    return text


def single_stream(frame: pd.DataFrame) -> pd.DataFrame:
    """The single-stream rows of ``frame``: what the per-batch tables, the throughput and speed-up
    plots, the roofline and the accuracy trade-off are about. Offline and server rows (per-request
    latencies, a rate offered) are the serving tables' (``serving``)."""
    return frame[frame["scenario"].fillna(SINGLE_STREAM) == SINGLE_STREAM]


def with_speedups(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` plus ``speedup``: images/s over the fp32 eager baseline of the same row (the same
    scenario, streams and threads); none for a server row, whose images/s is the rate offered."""
    frame = frame.copy()
    ok = (frame["status"] == "ok") & (frame["scenario"] != "server")
    base = frame[ok & (frame["setting"] == BASELINE_SETTING)]
    base = base.groupby(ROW_KEY, dropna=False)["throughput_ips"].last().rename("_base")
    frame = frame.join(base, on=ROW_KEY)
    frame["speedup"] = np.where(ok, frame["throughput_ips"] / frame["_base"], np.nan)
    return frame.drop(columns="_base")


def answers(frame: pd.DataFrame) -> pd.DataFrame:
    """Per device, mode, model and batch: the fastest ok setting and what it gains over fp32."""
    frame = with_speedups(frame)
    ok = frame[frame["status"] == "ok"].dropna(subset=["throughput_ips"])
    if ok.empty:
        return ok
    best = ok.loc[ok.groupby(ROW_KEY, sort=False, dropna=False)["throughput_ips"].idxmax()]
    best = best.assign(
        candidates=ok.groupby(ROW_KEY, sort=False, dropna=False)["setting"].count().to_numpy()
    )
    order = {m: i for i, m in enumerate(dict.fromkeys(frame["model"]))}
    best = best.assign(_o=best["model"].map(order))
    return (
        best.sort_values(["device", "mode", "_o", "batch_size"], kind="stable")
        .drop(columns="_o")
        .reset_index(drop=True)
    )


def by_input(part: pd.DataFrame, threads: bool = True) -> pd.DataFrame:
    """``part`` for display: a model measured at several input sides is named with each, e.g.
    "resnet50 288px", so that its rows do not fold into one (the sweep's --image-size); with
    ``threads``, one measured at several intra-op thread counts too, "resnet50 1 thread" (the
    sweep's --threads). A table with a threads column of its own passes ``threads=False``."""
    if part.empty or "image_size" not in part:
        return part
    sizes = part.groupby("model")["image_size"].transform("nunique")
    named = part["model"] + " " + part["image_size"].astype("Int64").astype(str) + "px"
    model = part["model"].where(sizes <= 1, named)
    if threads and "threads" in part:
        counts = part.groupby("model")["threads"].transform("nunique")
        said = [thread_text(t) for t in part["threads"]]
        model = model.where(counts <= 1, model + " " + pd.Series(said, index=part.index))
    return part.assign(model=model)


def thread_text(threads) -> str:
    """ "1 thread", "4 threads"; "threads not recorded" where none is."""
    n = finite(threads)
    if n is None:
        return "threads not recorded"
    return f"{n:.0f} thread" + ("" if n == 1 else "s")


def speedups_per_batch(part: pd.DataFrame) -> pd.DataFrame:
    """Rows (model, batch), a column per non-baseline setting: speed-up where both were measured."""
    part = with_speedups(by_input(part[part["status"] == "ok"]))
    table = part.pivot_table(
        index=["model", "batch_size"], columns="setting", values="speedup", aggfunc="last"
    )
    settings = [s for s in dict.fromkeys(part["setting"]) if s != BASELINE_SETTING]
    table = table.reindex(columns=settings).dropna(how="all")
    order = {m: i for i, m in enumerate(dict.fromkeys(part["model"]))}
    return table.sort_index(key=lambda idx: idx.map(order) if idx.name == "model" else idx)


def setting_order(settings) -> list[str]:
    """Settings in a fixed order (baseline first, then by name), the same in every plot of a run."""
    unique = list(dict.fromkeys(settings))
    rank = {p: i for i, p in enumerate(PRECISION_ORDER)}

    def key(s: str) -> tuple:
        precision = s.split("+")[0].split(" ")[0]
        return (s != BASELINE_SETTING, rank.get(precision, len(rank)), s.count("+"), s)

    return sorted(unique, key=key)


def roofline(frame: pd.DataFrame, env: dict) -> pd.DataFrame:
    """Ok rows with arithmetic intensity, achieved FLOP/s, both ceilings and what bounds each row.

    Bytes are the naive traffic estimate of ``flops.count_bytes`` (every operator's inputs plus
    outputs). The memory ceiling is env.json's measured ``bandwidth_gbs`` for the device (NaN when
    the run did not record one); the compute ceiling is the Result's measured ``peak_tflops``.
    """
    from resbench.engine import flops
    from resbench.models import list_models

    # single-stream rows only: an offline or server row's latencies are per request, its FLOP rate
    # shared out between streams, so batch / median latency is not the rate it reached
    frame = with_speedups(single_stream(frame[frame["status"] == "ok"]))
    known = set(list_models())
    bandwidth = env.get("bandwidth_gbs") or {}
    rows = []
    for _, r in frame.iterrows():
        flops_step = finite(r["gflops_per_step"])
        seconds = finite(r["latency_ms_median"])
        if r["model"] not in known or not flops_step or not seconds:
            continue
        traffic = None  # bytes at the precision that ran where the count knows it, else the label's
        for precision in dict.fromkeys([r.get("effective_precision"), r["precision"]]):
            with contextlib.suppress(ValueError, TypeError):  # no byte count (int8, None)
                traffic = flops.count_bytes(r["model"], int(r["image_size"]), r["mode"], precision)
                break
        if traffic is None:
            continue
        moved = traffic.bytes_per_step(int(r["batch_size"]))
        achieved = flops_step * 1e9 / (seconds / 1e3)
        peak = (finite(r["peak_tflops"]) or math.nan) * 1e12
        bw = (finite(bandwidth.get(r["device"])) or math.nan) * 1e9
        intensity = flops_step * 1e9 / moved
        fraction = moved / (seconds / 1e3) / bw
        # above the memory roof: the naive count (every op's inputs and outputs, no fusion, no
        # cache reuse) does not describe what ran, so neither the BW nor a bound resting on it is
        over = bool(math.isfinite(fraction) and fraction > 1)
        roof = min(peak, bw * intensity) if math.isfinite(bw) else peak
        if over:
            bound = ""
        elif math.isfinite(roof) and achieved < OVERHEAD_FRACTION * roof:
            bound = "overhead"
        elif math.isfinite(bw) and math.isfinite(peak):
            bound = "compute" if intensity >= peak / bw else "memory"
        else:
            bound = ""
        rows.append(
            {
                **r.to_dict(),
                "bytes_per_step": moved,
                "intensity": intensity,
                "achieved_flops": achieved,
                "peak_flops": peak,
                "bandwidth_bytes": bw,
                "bandwidth_fraction": math.nan if over else fraction,
                "over_roof": over,
                "bound": bound,
            }
        )
    return pd.DataFrame(rows)


def placed(roof: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """(the roofline rows a plot can place, a note on those it cannot): a row over the memory
    roof has no known intensity, so it is left out and counted."""
    over = roof["over_roof"].eq(True) if "over_roof" in roof else None
    if over is None or not over.any():
        return roof, ""
    return roof[~over], f" ({int(over.sum())} over the memory roof, left out: bytes unknown)"


def results_table(results: Sequence[Result], env: dict) -> pd.DataFrame:
    """Every Result with its speed-up, one-off cost and, where it can be placed, its roofline.

    ``diff_not_finite`` marks a row whose max_abs_diff is NaN or infinite (its outputs were not
    finite): a DataFrame cannot tell a NaN from a missing value, so it is decided on the Results.
    """
    frame = results_frame(results)
    frame["diff_not_finite"] = [nonfinite(field(r, "max_abs_diff")) for r in results]
    frame["one_off_s"] = one_off_s(frame)
    frame = with_speedups(frame)
    roof = roofline(frame, env)
    extra = ["bytes_per_step", "intensity", "bandwidth_fraction", "over_roof", "bound"]
    if roof.empty:
        return frame.assign(**{c: np.nan for c in extra})
    keyed = roof.set_index([*ROW_KEY, "setting"])[extra]
    keyed = keyed[~keyed.index.duplicated(keep="last")]
    return frame.join(keyed, on=[*ROW_KEY, "setting"])


def roof_bandwidth(roof: pd.DataFrame) -> float:
    """The run's measured memory bandwidth in bytes/s, or NaN where none was recorded."""
    bw = roof["bandwidth_bytes"].dropna()
    return float(bw.iloc[0]) if len(bw) else math.nan


def ceilings(roof: pd.DataFrame, xs: np.ndarray) -> list[tuple[str, float, np.ndarray]]:
    """Each precision's roof over the intensities ``xs``: min(matmul peak, bandwidth x intensity).

    (precision, peak FLOP/s, ceiling FLOP/s at each x); the compute ceiling alone without bandwidth.
    """
    bw = roof_bandwidth(roof)
    out = []
    for precision, peak in roof.groupby("precision")["peak_flops"].max().items():
        if math.isfinite(peak):
            ceiling = np.minimum(peak, bw * xs) if math.isfinite(bw) else np.full_like(xs, peak)
            out.append((precision, float(peak), ceiling))
    return out


def pareto_front(throughput, drop) -> np.ndarray:
    """Per point, whether no other point beats it: as many images/s or more at as low an accuracy
    drop or lower, and better in one. A point missing either number is never on the front."""
    ips, drop = np.asarray(throughput, float), np.asarray(drop, float)
    front = np.zeros(len(ips), bool)
    known = np.flatnonzero(np.isfinite(ips) & np.isfinite(drop))
    lowest = math.inf  # the lowest drop among points of strictly more images/s
    for speed in sorted(set(ips[known]), reverse=True):  # fastest first; ties of speed together
        tied = known[ips[known] == speed]
        least = drop[tied].min()
        if least < lowest:
            front[tied[drop[tied] == least]] = True
            lowest = least
    return front


def accuracy_picks(frame: pd.DataFrame, max_drop: float = MAX_ACCURACY_DROP) -> pd.DataFrame:
    """The accuracy answer, in one place: the ok rows of every (device, mode, model, batch) of which
    any row was scored on labelled images, fastest first, each marked with

    - ``measured``: its top-1 was scored; ``within``: its drop is known and at most ``max_drop``;
    - ``uncertain``: within by its drop, but its 95% interval reaches past ``max_drop``;
    - ``pareto``: on its row's front of images/s against drop (``pareto_front``);
    - ``fastest_within`` / ``fastest_overall``: the answer's two rows (one row may be both).

    A row whose accuracy was not measured is never within: it can only be the fastest overall.
    Empty when no row was scored.
    """
    ok = frame[frame["status"] == "ok"].dropna(subset=["throughput_ips"])
    if "top1_accuracy" not in ok or ok["top1_accuracy"].isna().all():
        return ok.iloc[0:0]
    scored = ok.groupby(ROW_KEY, dropna=False)["top1_accuracy"].transform(lambda s: s.notna().any())
    ok = ok[scored.astype(bool)].sort_values("throughput_ips", ascending=False, kind="stable")
    drop = pd.to_numeric(ok["accuracy_drop"], errors="coerce")
    high = pd.Series([_ci_high(v) for v in ok["accuracy_drop_ci"]], index=ok.index, dtype=float)
    ok = ok.assign(
        measured=ok["top1_accuracy"].notna(),
        within=ok["top1_accuracy"].notna() & (drop <= max_drop + DROP_TOLERANCE),
    )
    ok = ok.assign(uncertain=ok["within"] & (high > max_drop + DROP_TOLERANCE))
    ok["pareto"] = False
    ok["fastest_within"] = False
    ok["fastest_overall"] = False
    for _, part in ok.groupby(ROW_KEY, sort=False, dropna=False):
        front = pareto_front(part["throughput_ips"], pd.to_numeric(part["accuracy_drop"]))
        ok.loc[part.index, "pareto"] = front
        ok.loc[part.index[0], "fastest_overall"] = True
        within = part.index[part["within"].to_numpy()]
        if len(within):
            ok.loc[within[0], "fastest_within"] = True
    return ok


def _ci_high(ci) -> float:
    """The upper end of a recorded [low, high] interval, or NaN."""
    if isinstance(ci, list | tuple | np.ndarray) and len(ci) == 2:
        return finite(ci[1]) if finite(ci[1]) is not None else math.nan
    return math.nan
