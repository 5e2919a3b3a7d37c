"""Markdown for a run: answers first, warnings in words, then per device and mode the tables."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from resbench import settings
from resbench.cli import plural
from resbench.engine.measure import Result
from resbench.report import accuracy, native, serving
from resbench.report.analysis import (
    BASELINE_SETTING,
    LOAD_MEDIAN_CORES,
    MAX_ACCURACY_DROP,
    answers,
    by_input,
    finite,
    headline,
    results_table,
    row_loaded,
    single_stream,
)
from resbench.report.caveats import env_warnings, peak_lines, warnings_for
from resbench.report.load import load_note, load_warning
from resbench.report.text import (
    agreement,
    flags,
    fmt,
    mfu_text,
    pct,
    points,
    row_name,
    times,
)


def env_lines(env: dict) -> list[str]:
    runs = invocation_lines(env.get("invocations") or [])
    env = {k: v for k, v in env.items() if k != "invocations"}
    if not env:
        return ["- environment: not recorded", *runs]
    gpus = ", ".join(env.get("gpu_names") or []) or "none"
    lines = [
        f"- device(s): GPU {gpus}; CPU {env.get('cpu')} ({env.get('logical_cores')} logical cores, "
        f"{env.get('torch_threads')} torch threads)",
        f"- software: torch {env.get('torch')}, CUDA {env.get('cuda')}, cuDNN {env.get('cudnn')}, "
        f"Python {env.get('python')}, resbench {env.get('resbench')} ({env.get('git_commit')})",
    ]
    lines.append(f"- CPU arithmetic: {cpu_arithmetic(env)}")
    if env.get("runtimes"):
        lines.append(
            "- runtimes: " + ", ".join(f"{k} {v}" for k, v in sorted(env["runtimes"].items()))
        )
    if env.get("bandwidth_gbs"):
        probes = ", ".join(f"{d} {v:,.0f} GB/s" for d, v in env["bandwidth_gbs"].items())
        lines.append(f"- measured memory bandwidth (large copy, read + write): {probes}")
    if env.get("command") and not runs:
        lines.append(f"- command: `{env['command']}`")
    if env.get("source"):
        lines.append(f"- source: {env['source']}")
    if env.get("timestamp"):
        lines.append(f"- started: {env['timestamp']}")
    return lines + runs


def invocation_lines(invocations: list[dict]) -> list[str]:
    """A resumed run's commands, in order, each with when it started ([] for one command: the
    environment's ``command`` says it)."""
    if len(invocations) < 2:
        return []
    resumes = sum(bool(i.get("resume")) for i in invocations)
    starts = plural(len(invocations) - resumes, "start")
    lines = [f"- commands ({plural(len(invocations), 'invocation')}: {starts} and "
             f"{plural(resumes, 'resume')}), in order:"]  # fmt: skip
    for n, i in enumerate(invocations, 1):
        when = f"started {i['started']}" if i.get("started") else "start not recorded"
        kind = "resume, " if i.get("resume") else ""
        lines.append(f"  {n}. `{i.get('command')}` ({kind}{when})")
    return lines


def cpu_arithmetic(env: dict) -> str:
    """The CPU features that decide what bf16 and int8 compute in, as env.json recorded them."""
    if "cpu_flags" not in env:
        return "not recorded (a run from before resbench read the CPU's flags)"
    kernels = [
        f"{dtype} `{env[key]}`"
        for dtype, key in (("fp32", "onednn_fp32_kernel"), ("bf16", "onednn_bf16_kernel"))
        if env.get(key)
    ]
    return (
        f"flags {', '.join(env['cpu_flags']) or 'none of interest'}; PyTorch's vector capability "
        f"{env.get('torch_cpu_capability')}"
        + (f"; oneDNN's convolution kernels: {', '.join(kernels)}" if kernels else "")
    )


def headline_text(r, shown: str) -> str:
    """A row's headline figure as ``shown``, or why it has none ("forks disagree: ...")."""
    said = r.get("forks_disagree")
    return said if isinstance(said, str) else shown


def disagreeing(part: pd.DataFrame, model: str, batch: int) -> str:
    """ "; forks disagree on fp32: 1.40 ms and 299.6 ms" for the settings of one model and batch
    left out of its answer, else ""."""
    if "forks_disagree" not in part:
        return ""
    rows = part[(part["model"] == model) & (part["batch_size"] == batch)]
    said = [
        f"{r['setting']}: {r['forks_disagree'].removeprefix('forks disagree: ')}"
        for _, r in rows.iterrows()
        if isinstance(r["forks_disagree"], str)
    ]
    return f" (forks disagree on {', '.join(said)})" if said else ""


def answers_rows(part: pd.DataFrame, max_drop: float = MAX_ACCURACY_DROP) -> pd.DataFrame:
    """Per model and batch: the fastest setting, its images/s, speed-up, MFU and agreement; where
    rows were scored on labelled images, the fastest within ``max_drop`` points and the fastest of
    all with its drop (``accuracy.answer_rows``). Where a runtime outside PyTorch was measured, the
    fastest row that stays in PyTorch (eager, compile, aotinductor, CUDA graphs) beside them."""
    scored = accuracy.has_accuracy(part)
    rows = accuracy.answer_rows(part, max_drop) if scored else _answers_rows(part)
    return native.with_pytorch(part, rows, max_drop, scored)


def _answers_rows(part: pd.DataFrame) -> pd.DataFrame:
    best = answers(by_input(part))
    rows = []
    for _, r in best.iterrows():
        only = r["candidates"] == 1
        loaded = load_note(part, r)
        if loaded:  # a speed-up between loaded rows measures the load, not the setting
            said = loaded + disagreeing(part, r["model"], r["batch_size"])
            rows.append({"model": r["model"], "batch": r["batch_size"], "fastest": said})
            continue
        rows.append(
            {
                "model": r["model"],
                "batch": r["batch_size"],
                "fastest": r["setting"]
                + flags(r)
                + (" (only one measured)" if only else "")
                + disagreeing(part, r["model"], r["batch_size"]),
                "img/s": fmt(r["throughput_ips"]),
                f"vs {BASELINE_SETTING}": times(r["speedup"]),
                "MFU": mfu_text(r),
                "agreement": agreement(r),
            }
        )
    answered = {(row["model"], row["batch"]) for row in rows}
    for (model, batch), _ in by_input(part).groupby(["model", "batch_size"], sort=False):
        said = disagreeing(part, model, batch)
        if (model, batch) not in answered and said:  # every row it has: forks disagree
            rows.append({"model": model, "batch": batch, "fastest": "no answer" + said})
    return pd.DataFrame(rows).fillna("")


def answers_table(part: pd.DataFrame, max_drop: float = MAX_ACCURACY_DROP) -> str:
    return answers_rows(part, max_drop).to_markdown(index=False, disable_numparse=True)


def throughput_table(part: pd.DataFrame) -> str:
    """Rows model x batch, a column of images/s per setting; the fastest setting per row in bold."""
    part = by_input(part).copy()
    part["cell"] = [
        headline_text(r, fmt(r["throughput_ips"]) + flags(r)) if r["status"] == "ok"
        else str(r["status"])
        for _, r in part.iterrows()
    ]  # fmt: skip
    settings = list(dict.fromkeys(part["setting"]))
    index = ["model", "batch_size"]
    cells = part.pivot_table(index=index, columns="setting", values="cell", aggfunc="last")
    speed = part[part["status"] == "ok"].pivot_table(
        index=index, columns="setting", values="throughput_ips", aggfunc="last"
    )
    cells = cells.reindex(columns=settings).fillna("")
    for key in cells.index:
        if key in speed.index and speed.loc[key].notna().sum() > 1:
            best = speed.loc[key].idxmax()
            cells.loc[key, best] = f"**{cells.loc[key, best]}**"
    gflops = part.groupby(index)["gflops_per_image"].first()
    table = cells.reset_index()
    table.insert(2, "GFLOPs/img", [fmt(gflops.get(tuple(k)), 2) for k in cells.index])
    table = table.rename(columns={"batch_size": "batch"})
    order = table["model"].map({m: i for i, m in enumerate(dict.fromkeys(part["model"]))})
    table = table.assign(_o=order).sort_values(["_o", "batch"]).drop(columns="_o")
    return table.to_markdown(index=False, disable_numparse=True)


def noise_note(r) -> str:
    notes = []
    median = finite(r.get("latency_ms_median"))
    iqr = finite(r.get("latency_ms_iqr"))
    if r.get("noisy") is True and median and iqr is not None:
        notes.append(f"IQR {iqr / median:.0%}")
    if r.get("throttled") is True:
        notes.append(
            "throttled" + (f": {r['throttle_reasons']}" if r.get("throttle_reasons") else "")
        )
    if row_loaded(r.get("foreign_cpu")):
        notes.append(f"{r['foreign_cpu']:.1f} cores busy elsewhere")
    if r.get("quiet") is False:
        notes.append(f"never quiet (waited {fmt(r.get('quiet_wait_s'))} s)")
    return "; ".join(notes)


def computed_in(r) -> str:
    """What a row's arithmetic was: its precision, read back, with the kernels that ran. A PyTorch
    CPU row says every convolution kernel of one of its own calls and the reorders ("fp32
    (jit:avx512_core 17/20, jit_1x1:avx512_core 3/20; 59 reorders)"); a runtime its own report
    ("bf16 (brgconv_avx512_bf16)"); an older PyTorch CPU row, whose kernel came from a probe of
    one small convolution and not from the row, says so."""
    eff, kernel = r.get("effective_precision"), r.get("compute_kernel")
    if not isinstance(eff, str):
        return ""
    kernels, reorders = r.get("kernels"), r.get("reorders")
    if isinstance(kernels, str):
        count = finite(reorders)
        tail = f"; {int(count)} reorder{'s' if count != 1 else ''}" if count else ""
        later = "; re-read later" if isinstance(r.get("kernels_read"), str) else ""
        return f"{eff} ({kernels}{tail}{later})"
    if not isinstance(kernel, str):
        return eff
    backend = settings.BACKENDS.get(r.get("backend"))
    if r.get("device") == "cpu" and backend is not None and backend.pytorch:
        return f"{eff} (probe: {kernel}; not read off this row)"
    return f"{eff} ({kernel})"


def bandwidth_text(r) -> str:
    """The BW cell: the fraction of the copy bandwidth, or "over roof" where the naive byte count
    put the row above the memory roof (so it says nothing of what ran)."""
    return "over roof" if r.get("over_roof") is True else pct(r.get("bandwidth_fraction"))


def detail_table(part: pd.DataFrame, threads: bool = False) -> str:
    """Every row of ``part`` with its numbers; ``threads``: a column of the intra-op threads each
    ran with (a run whose rows differ in how they were issued, ``serving.shows_shape``)."""
    has = {
        c: c in part and part[c].notna().any()
        for c in ("images_per_joule", "repeat_spread", "fork_spread", "max_abs_diff",
                  "one_off_s", "effective_precision")
    }  # fmt: skip
    has["max_abs_diff"] = has["max_abs_diff"] or bool(part["diff_not_finite"].any())
    rows = []
    for _, r in by_input(part).iterrows():
        ok = r["status"] == "ok"
        row = {
            "model": r["model"],
            "batch": r["batch_size"],
            "setting": r["setting"],
            **({"threads": r["threads"]} if threads else {}),
            "img/s": headline_text(r, fmt(r["throughput_ips"])) if ok else "",
            f"vs {BASELINE_SETTING}": times(r["speedup"]) if ok else "",
        }
        if has["images_per_joule"]:
            row["img/J"] = fmt(r["images_per_joule"], 2) if ok else ""
        row |= {
            "median ms": fmt(r["latency_ms_median"], 2) if ok else "",
            "p99 ms": fmt(r["latency_ms_p99"], 2) if ok else "",
            "peak MB": fmt(r["peak_memory_mb"], 0) if ok else "",
            "GFLOPs/step": fmt(r["gflops_per_step"], 1),
            "TFLOP/s": fmt(r["tflops_achieved"], 2) if ok else "",
            "MFU": mfu_text(r) if ok else "",
            "BW": bandwidth_text(r) if ok else "",
            "bound": (r.get("bound") or "") if ok and isinstance(r.get("bound"), str) else "",
        }
        if has["max_abs_diff"]:
            row["agreement with fp32 eager"] = agreement(r) if ok else ""
        if has["one_off_s"]:
            row["one-off s"] = fmt(r["one_off_s"], 1) if ok else ""
        if has["effective_precision"]:
            row["computed in"] = computed_in(r)
        if has["repeat_spread"]:
            row["repeat spread"] = pct(r["repeat_spread"]) if ok else ""
        if has["fork_spread"]:  # between fresh processes: (max - min) / median of fork medians
            forks = r["forks"]
            shown = ok and isinstance(r["fork_spread"], float) and forks == forks
            row["fork spread"] = f"{pct(r['fork_spread'])} of {int(forks)}" if shown else ""
        row["noise"] = noise_note(r) if ok else ""
        row["status"] = r["status"] if ok else f"{r['status']}: {str(r['error'] or '')[:60]}"
        rows.append(row)
    return pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)


LEGEND = (
    "Images per second (batch / median latency). `vs fp32` is the speed-up over the fp32, "
    "contiguous, eager row of the same model and batch. `~` marks a noisy (IQR above 10% of the "
    f"median) or throttled result, `!` one measured while other processes kept {LOAD_MEDIAN_CORES:g}+ "
    "cores busy. Settings: precision, `cl` = channels_last, `compile` = torch.compile. MFU is the "
    "achieved FLOP/s over the measured peak, the fastest of several matmul shapes and 3x3 "
    "convolutions on the same device and precision (`over peak`: the row beat it, a probe defect, "
    "so no MFU is shown); BW the naive bytes moved per second, counted at the precision that ran, "
    "over the measured copy bandwidth (`over roof`: above 100%, so the count does not describe "
    "what ran and neither BW nor bound is shown); `bound` says which roofline ceiling limits the row (`overhead`: under "
    "20% of both). GFLOPs/img is the forward pass (a multiply-add counts 2). `one-off s` is a "
    "setting's one-time cost before its timed iterations, whatever its backend calls it: export, "
    "quantisation and session creation, or torch.compile's compilation in its first call (blank: "
    "not recorded). `computed in` is the precision the arithmetic really ran in, read back from the "
    "runtime or PyTorch and the hardware, with the convolution kernels that ran: on a PyTorch CPU "
    "row, every kernel of one of its own calls (oneDNN's log, outside the timed region) with its "
    "share and the layout reorders, or none through oneDNN (PyTorch's native convolution)."
)


def summary_markdown(
    env: dict,
    results: Sequence[Result],
    title: str,
    max_batch: Sequence[dict] = (),
    max_accuracy_drop: float = MAX_ACCURACY_DROP,
) -> str:
    """summary.md; ``max_accuracy_drop`` (points) bounds the answers where rows were scored."""
    frame = results_table(results, env)
    latency = single_stream(frame)  # the per-batch tables; offline and server rows: serving's
    shape = serving.shows_shape(frame)
    kind = ", single-stream" if shape else ""  # said where other rows were issued otherwise
    out = [f"# {title}", ""]
    opening = serving.opener_lines(frame)
    if opening:
        out += [*[f"- {line}" for line in opening], ""]
    out += [f"**{headline(results)}**", ""]
    load = load_warning(results, env.get("logical_cores"))
    if load:
        out += [f"**Warning: {load}.**", ""]
    for (device, mode), part in latency.groupby(["device", "mode"], sort=False):
        name = part["device_name"].dropna().iloc[0] if part["device_name"].notna().any() else device
        table = answers_table(part, max_accuracy_drop)
        out += [f"## Answers: {mode} on {device} ({name}){kind}", "", table, ""]
    warns = [*env_warnings(env), *warnings_for(results, frame, env.get("logical_cores"))]
    if warns:
        out += ["## Warnings", "", *[f"- {w}" for w in warns], ""]
    out += ["## Environment", "", *env_lines(env), *peak_lines(results), "", LEGEND]
    if accuracy.has_accuracy(frame):
        out += ["", accuracy.LEGEND.format(bound=points(max_accuracy_drop))]
    for (device, mode), part in latency.groupby(["device", "mode"], sort=False):
        name = part["device_name"].dropna().iloc[0] if part["device_name"].notna().any() else device
        out += ["", f"## {mode} on {device} ({name}){kind}", "", throughput_table(part)]
        scored = accuracy.accuracy_rows(part, max_accuracy_drop)
        if not scored.empty:
            heading = f"### {mode} on {device}: accuracy on {accuracy.scored_on(part)}"
            out += ["", heading, "", scored.to_markdown(index=False, disable_numparse=True)]
        out += ["", f"### {mode} on {device}: details", "", detail_table(part, shape)]
    for device, part in serving.serving(frame).groupby("device", sort=False):
        name = part["device_name"].dropna().iloc[0] if part["device_name"].notna().any() else device
        table = serving.serving_rows(part).to_markdown(index=False, disable_numparse=True)
        out += ["", f"## Serving on {device} ({name}): offline and server", "", table, "",
                serving.LEGEND]  # fmt: skip
    if max_batch:
        out += ["", "## Largest batch that fits", ""]
        table = pd.DataFrame(list(max_batch)).drop(columns=["probes"], errors="ignore")
        out.append(table.to_markdown(index=False, disable_numparse=True))
    failed = errors(frame)
    if failed:
        out += ["", "## Errors", "", *[f"- {e}" for e in failed]]
    return "\n".join(out) + "\n"


def errors(frame: pd.DataFrame) -> list[str]:
    """Each error row named, with its whole error text (the Errors of summary.md and the page)."""
    return [f"{row_name(r)}: {r['error']}" for _, r in frame[frame["status"] == "error"].iterrows()]
