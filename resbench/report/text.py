"""How numbers and rows are written, everywhere the report writes them: markdown, the page, compare."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from resbench.report.analysis import finite, row_flagged, row_loaded
from resbench.report.loading import beat_peak


def fmt(value, digits: int = 1) -> str:
    value = finite(value)
    if value is None:
        return ""
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def pct(value) -> str:
    value = finite(value)
    return "" if value is None else f"{value:.0%}"


OVER_PEAK = "over peak"  # an MFU cell of a row that beat its peak probe (a probe defect)


def mfu_text(r) -> str:
    """A row's MFU as a cell: "42%", "over peak" where it beat the probe's peak (never above
    100%), or "" where there is none."""
    return OVER_PEAK if beat_peak(r.get("peak_exceeded"), r.get("mfu")) else pct(r.get("mfu"))


def times(value) -> str:
    value = finite(value)
    return "" if value is None else f"{value:.2f}x"


def flags(row) -> str:
    """Short marks for a row a reader should distrust: noisy/throttled (~), under load (!)."""
    marks = ""
    if row_flagged(row.get("noisy"), row.get("throttled")):
        marks += "~"
    if row_loaded(row.get("foreign_cpu")):
        marks += "!"
    return marks


def row_name(r) -> str:
    """A Result (or a row with its fields) as the warnings name it: "resnet18 b8 inference fp32"."""
    get = r.get if isinstance(r, dict | pd.Series) else lambda k: getattr(r, k, None)
    return f"{get('model')} b{get('batch_size')} {get('mode')} {get('setting')}"


def named(rows: Sequence, detail=lambda r: "", most: int = 8) -> str:
    """The first ``most`` rows by name (with ``detail``), then how many more."""
    names = [row_name(r) + (f" ({detail(r)})" if detail(r) else "") for r in rows[:most]]
    more = f" and {len(rows) - most} more" if len(rows) > most else ""
    return ", ".join(names) + more


def diff_text(value) -> str:
    """A non-finite max_abs_diff as it is shown: "NaN", "inf" or "-inf"."""
    value = float(value)
    return "NaN" if value != value else ("inf" if value > 0 else "-inf")


def agreement(r) -> str:
    """Agreement with fp32 eager logits, e.g. "max abs diff 0.1; top-1 100.0%", where recorded."""
    if bool(r.get("diff_not_finite") or False):  # results_table decides it on the Results
        # NaN/Inf outputs: no agreement at all; a top-1 over NaN logits means nothing
        return f"max abs diff {diff_text(r['max_abs_diff'])}: outputs not finite"
    agree = []
    if finite(r.get("max_abs_diff")) is not None:
        agree.append(f"max abs diff {r['max_abs_diff']:.2g}")
    if finite(r.get("top1_agreement")) is not None:
        agree.append(f"top-1 {r['top1_agreement']:.1%}")
    if not agree:
        return ""
    inputs = r.get("agreement_inputs")
    on = "real images" if isinstance(inputs, str) and inputs != "N(0,1)" else "N(0,1) inputs"
    return "; ".join(agree) + f" (on {on})"


def points(value: float) -> str:
    """An accuracy bound in points, as the answers name it: "1.0 point", "0.5 points", "0.25 points"."""
    shown = f"{value:.1f}" if round(value, 1) == value else f"{value:g}"
    return f"{shown} point" + ("" if shown == "1.0" else "s")


def p_text(value) -> str:
    """A p-value in two significant digits, exponents bare: "0.34", "0.0012", "1e-9"."""
    value = finite(value)
    if value is None:
        return ""
    return f"{value:.2g}".replace("e-0", "e-").replace("e+0", "e+")


def ci_text(ci) -> str:
    """A recorded [low, high] interval in points: "0.12 to 0.50"; "" when none was recorded."""
    if not isinstance(ci, list | tuple) or len(ci) != 2:
        return ""
    low, high = finite(ci[0]), finite(ci[1])
    return "" if low is None or high is None else f"{low:.2f} to {high:.2f}"
