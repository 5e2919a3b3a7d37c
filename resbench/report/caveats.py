"""Every warning a run's summary and page open with, one sentence each: load, quiet, noise,
throttling, outputs that were not finite, rows whose label would be false, peaks and the memory
roof, forks that disagree, backends not tried, failures, and what the run itself recorded."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from resbench import settings
from resbench.engine import timing
from resbench.engine.measure import Result
from resbench.report.analysis import finite, nonfinite
from resbench.report.load import load_warning
from resbench.report.loading import beat_peak, disagreement, field
from resbench.report.text import diff_text, fmt, named


def env_warnings(env: dict) -> list[str]:
    """The run's own warnings, as env.json recorded them: torchrun ranks sharing a CPU's cores
    (``sweep/ranks.py``), one sentence each."""
    shared = env.get("shared_cores")
    said = shared.get("warning") if isinstance(shared, dict) else None
    return [said[0].upper() + said[1:] + "."] if isinstance(said, str) and said else []


def warnings_for(
    results: Sequence[Result], frame: pd.DataFrame | None = None, cores: int | None = None
) -> list[str]:
    """Every warning about a run, one sentence each: load, never quiet, noise, throttling,
    outputs that were not finite, rows over the memory roof (from ``frame``, the results table
    with its roofline), failures."""
    out = []
    load = load_warning(results, cores)
    if load:
        out.append(load[0].upper() + load[1:] + ".")
    unquiet = [r for r in results if getattr(r, "quiet", None) is False]
    if unquiet:
        out.append(
            f"{len(unquiet)} results never got a quiet machine (--wait-quiet waited, then measured "
            "anyway): "
            + named(unquiet, lambda r: f"waited {fmt(getattr(r, 'quiet_wait_s', None))} s")
            + "."
        )
    ok = [r for r in results if r.status == "ok"]
    noisy = sum(r.noisy is True for r in ok)
    if noisy:
        out.append(
            f"{noisy} of {len(ok)} results are noisy (IQR above 10% of the median), marked `~`."
        )
    throttled = [r for r in ok if getattr(r, "throttled", None) is True]
    if throttled:
        reasons = sorted({str(getattr(r, "throttle_reasons", "") or "") for r in throttled} - {""})
        out.append(
            f"{len(throttled)} results ran while the device was throttled"
            + (f" ({', '.join(reasons)})" if reasons else "")
            + ", marked `~`."
        )
    broken = [r for r in results if nonfinite(getattr(r, "max_abs_diff", None))]
    if broken:
        out.append(
            f"{len(broken)} results have a max abs diff against fp32 eager that is not a number: "
            + named(broken, lambda r: diff_text(r.max_abs_diff))
            + ". Their outputs held NaN or Inf: they do not agree with fp32 at all, whatever "
            "their top-1 says, and their speed measures broken arithmetic."
        )
    unfaithful = [
        r for r in results if r.status == "skipped" and getattr(r, "effective_precision", None)
    ]
    if unfaithful:
        out.append(
            f"{len(unfaithful)} Configs were skipped because this machine would not compute what "
            "their label says: "
            + named(unfaithful, lambda r: f"it would compute {r.effective_precision}")
            + " (the reason is in the status column)."
        )
    over = [r for r in ok if beat_peak(field(r, "peak_exceeded"), r.mfu)]
    if over:
        out.append(
            f"MFU not shown for {len(over)} rows: they beat the probe's peak, a probe defect: "
            + named(over, peak_detail)
            + ". Their MFU cells say `over peak`."
        )
    split = [r for r in ok if disagreement(r)]
    if split:
        rows = "1 row has" if len(split) == 1 else f"{len(split)} rows have"
        their = "its" if len(split) == 1 else "their"
        out.append(
            f"{rows} no headline figure: {their} forks (fresh processes) are more than "
            f"{timing.FORKS_DISAGREE:g}x apart, so no one figure describes them: "
            + named(split, lambda r: disagreement(r).removeprefix("forks disagree: "))
            + ". Rerun them with more --forks on a quiet machine."
        )
    untried = untried_backends(results)
    if untried:
        out.append(untried)
    over_roof = roof_warning(frame) if frame is not None else None
    if over_roof:
        out.append(over_roof)
    failed = [r for r in results if r.status in ("error", "oom")]
    if failed:
        out.append(f"{len(failed)} Configs did not finish (see Errors and the detail tables).")
    return out


def untried_backends(results: Sequence[Result]) -> str | None:
    """Which backends the run did not measure on its devices, and why: not installed (the extra
    that brings it), or not in the run's grid (the flag that adds it). An answer is only the
    fastest of what was tried; this says what was not."""
    devices = {r.device.split(":")[0] for r in results}
    ran = {r.backend for r in results if r.status == "ok"}
    missing: dict[str, list[str]] = {}
    unasked: list[str] = []
    for name, backend in settings.BACKENDS.items():
        if name in ran or not devices & set(backend.devices):
            continue
        if not backend.installed():
            missing.setdefault(backend.extra or backend.needs, []).append(name)
        else:
            unasked.append(name)
    parts = [
        f'{", ".join(names)} (not installed: pip install -e ".[{extra}]")'
        for extra, names in missing.items()
    ]
    if unasked:
        parts.append(
            f"{', '.join(unasked)} (not in this run's grid: add --backends {','.join(unasked)}, "
            "or settings such as int8+openvino)"
        )
    if not parts:
        return None
    return "Backends not tried, so no answer considers them: " + "; ".join(parts) + "."


def peak_detail(r) -> str:
    """ "0.221 TFLOP/s, peak 0.207 by mm BLAS 2048x2048x2048"."""
    probe = field(r, "peak_probe")
    by = f" by {probe}" if probe else ", probe not recorded"
    return f"{fmt(r.tflops_achieved, 3)} TFLOP/s, peak {fmt(r.peak_tflops, 3)}{by}"


def peak_lines(results: Sequence[Result]) -> list[str]:
    """The peaks MFU divides by, per device and precision, with the probe that gave each."""
    peaks: dict[tuple, None] = {}
    for r in results:
        if r.status == "ok" and finite(r.peak_tflops) is not None:
            probe = field(r, "peak_probe") or "probe not recorded"
            peaks[(r.device, r.precision, fmt(r.peak_tflops, 3), probe)] = None
    if not peaks:
        return []
    said = [f"{d} {p} {tflops} TFLOP/s ({probe})" for d, p, tflops, probe in peaks]
    return ["- MFU's peak (the fastest probe): " + "; ".join(said)]


def roof_warning(frame: pd.DataFrame) -> str | None:
    """The warning for rows whose naive byte count puts them over the memory roof."""
    if "over_roof" not in frame:
        return None
    over = frame[frame["over_roof"].eq(True)]
    if over.empty:
        return None
    names = [
        f"{r['model']} b{r['batch_size']} {r['mode']} {r['setting']}" for _, r in over.iterrows()
    ]
    return (
        f"BW not shown for {len(over)} row{'s' if len(over) != 1 else ''}: the naive byte count (every operator's inputs and "
        "outputs, no fusion, no cache reuse) puts them over the measured copy bandwidth, so it "
        "does not describe what ran (a fused graph whose activations stay in cache), and no "
        "bound is diagnosed from it: " + ", ".join(names[:8]) + ("..." if len(names) > 8 else "")
        + ". Their BW cells say `over roof`; the roofline plots leave them out."
    )  # fmt: skip
