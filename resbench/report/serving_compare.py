"""Comparing serving rows (``compare``): what a pair of matched offline or server rows is judged on.

- offline, and fixed-rate server rows sustained in both runs: on latency, as every other row (the
  moderated t on fork medians), with images/s, p99 and sustained shown beside it;
- a fixed-rate server row not sustained in a run: on whether it was sustained, never on a latency
  (a rate beyond capacity has none). It became not sustained: "slower"; became sustained: "faster";
  sustained in neither: "inconclusive";
- a server row that searched for its peak rate under a p99 bound: on that peak. It fell by more
  than the threshold (or no rate meets the bound any more): "slower", so ``--fail-on slower``
  catches it; rose by more: "faster"; within the threshold, or no rate met it in either run:
  "inconclusive" (one search a side, no variance between processes to test against).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from resbench.engine.measure import Result
from resbench.report.analysis import SINGLE_STREAM, finite
from resbench.report.serving import bound_text, known, scenario_text, searched
from resbench.report.significance import percent
from resbench.report.text import fmt

LATENCY, PEAK, SUSTAINED = "latency", "peak", "sustained"
# columns a comparison shows only where some matched row needs them, after "device"
SHAPE = ("scenario", "streams", "threads")
OFFLINE = ("old img/s", "new img/s")
PEAKS = ("old peak req/s", "new peak req/s")
SERVER = ("old p99 ms", "new p99 ms", "sustained old/new")


def _row(r: Result) -> dict:
    return {k: getattr(r, k, None) for k in ("scenario", "rate", "offered_rate", "target_p99_ms")}


def basis(new: Result, old: Result) -> str:
    """What the pair is judged on: the peak rate, whether it was sustained, or its latency."""
    if searched(_row(new)):
        return PEAK
    if getattr(new, "scenario", SINGLE_STREAM) == "server" and not (
        known(new.sustained) is True and known(old.sustained) is True
    ):
        return SUSTAINED
    return LATENCY


def judge(new: Result, old: Result, kind: str, threshold: float) -> tuple[float, str, str]:
    """(speedup, verdict, note) of a pair judged on its peak (new peak over old) or on whether it
    was sustained (no speedup: NaN)."""
    if kind == PEAK:
        bound = f"p99 {bound_text(new.target_p99_ms)} ms"
        a, b = finite(new.offered_rate), finite(old.offered_rate)
        if a is None and b is None:
            return math.nan, "inconclusive", f"no rate met {bound} in either run"
        if a is None:
            return math.nan, "slower", f"no rate meets {bound} now (the old peak: {fmt(b)} req/s)"
        if b is None:
            return math.nan, "faster", f"a rate meets {bound} now (none did before)"
        ratio = a / b
        said = f"peak under {bound} {ratio - 1:+.1%}; one search a side, untested"
        if abs(ratio - 1) > threshold:
            return ratio, "faster" if ratio > 1 else "slower", said
        return ratio, "inconclusive", said + f", within the {percent(threshold)} threshold"
    rate = f"{fmt(finite(new.rate) or finite(new.offered_rate))} req/s"
    a, b = known(new.sustained), known(old.sustained)
    if b is True and a is not True:
        return (
            math.nan,
            "slower",
            f"no longer sustained at {rate} (old p99 {fmt(old.latency_ms_p99, 2)} ms)",
        )
    if a is True and b is not True:
        return (
            math.nan,
            "faster",
            f"now sustained at {rate} (was not; new p99 {fmt(new.latency_ms_p99, 2)} ms)",
        )
    return (
        math.nan,
        "inconclusive",
        f"not sustained at {rate} in either run: beyond both capacities",
    )


def columns(new: Result, old: Result) -> dict:
    """The serving columns of a pair (``compare`` keeps those some row needs)."""
    sustained = "/".join(
        {True: "yes", False: "no", None: "-"}[known(x.sustained)] for x in (old, new)
    )
    server = getattr(new, "scenario", None) == "server"
    late_old, late_new = (known(x.sustained) is not False for x in (old, new))  # else no latency
    return {
        "scenario": scenario_text(_row(new)),
        "streams": new.streams,
        "threads": new.threads,
        "old img/s": old.throughput_ips if new.scenario == "offline" else math.nan,
        "new img/s": new.throughput_ips if new.scenario == "offline" else math.nan,
        "old peak req/s": _peak(old) if searched(_row(new)) else math.nan,
        "new peak req/s": _peak(new) if searched(_row(new)) else math.nan,
        "old p99 ms": _num(old.latency_ms_p99) if server and late_old else math.nan,
        "new p99 ms": _num(new.latency_ms_p99) if server and late_new else math.nan,
        "sustained old/new": sustained if server else "",
    }


def _peak(r: Result) -> float:
    return _num(r.offered_rate)


def _num(value) -> float:
    value = finite(value)
    return math.nan if value is None else value


def needed(pairs: Sequence[tuple[Result, Result]]) -> list[str]:
    """The serving columns the matched pairs need: none for single-stream rows at one stream and
    thread count (a comparison of those reads as it always did)."""
    rows = [r for pair in pairs for r in pair]
    out = []
    if (
        any(r.scenario != SINGLE_STREAM for r in rows)
        or len({(r.streams, r.threads) for r in rows}) > 1
    ):
        out += SHAPE
    if any(r.scenario == "offline" for r, _ in pairs):
        out += OFFLINE
    if any(searched(_row(r)) for r, _ in pairs):
        out += PEAKS
    if any(r.scenario == "server" for r, _ in pairs):
        out += SERVER
    return out


def served_sentence(served: int) -> str:
    """The verdict line's word on the rows not judged on latency ("" for none)."""
    if not served:
        return ""
    rows = "1 server row is" if served == 1 else f"{served} server rows are"
    return (
        f" {rows} judged on its peak rate under the p99 bound, or on whether its rate was "
        "sustained, never on a latency it did not have (one search or run a side, untested)."
    )
