"""Serving in words and data: what a machine serves (the opener), the table of offline and server
rows, and the points of the latency-against-offered-rate plot (``serving_plot`` draws them).

Offline rows keep every stream busy; server rows offer Poisson arrivals at a fixed rate, or search
for the highest rate whose p99 meets a bound (``target_p99_ms``, every rate tried in
``peak_tries``). Their latencies are per request. A server rate that was not sustained has no
latency (datamodel.Result): it is never an answer, never a latency cell and never a latency point.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from resbench.report.analysis import SINGLE_STREAM, by_input, finite, thread_text
from resbench.report.text import flags, fmt

SERVING_SCENARIOS = ("offline", "server")
LESS_OR_EQUAL = "\u2264"


def serving(frame: pd.DataFrame) -> pd.DataFrame:
    """The offline and server rows of ``frame`` (its single-stream ones: ``single_stream``)."""
    return frame[frame["scenario"].isin(SERVING_SCENARIOS)]


def shows_shape(frame: pd.DataFrame) -> bool:
    """Whether a table of ``frame`` needs scenario, streams and threads columns: some row is not
    single-stream, or the rows ran at more than one stream or thread count. A run of single-stream
    rows at one thread count reads as it did before these fields existed."""
    if frame.empty:
        return False
    return bool(
        (frame["scenario"].fillna(SINGLE_STREAM) != SINGLE_STREAM).any()
        or frame["streams"].nunique(dropna=False) > 1
        or frame["threads"].nunique(dropna=False) > 1
    )


def bound_text(value) -> str:
    """A p99 bound as it was given: 100 -> "100", 12.5 -> "12.5"."""
    value = finite(value)
    return "" if value is None else f"{value:g}"


def searched(r) -> bool:
    """A server row that searched for its peak rate under a p99 bound (``--target-p99-ms``)."""
    return r.get("scenario") == "server" and finite(r.get("target_p99_ms")) is not None


def shape_text(r) -> str:
    """How a row ran: "int8+openvino, 2 streams x 1 thread, batch 4" (", queue 2 ms" for a server
    row's batcher window)."""
    streams = int(finite(r.get("streams")) or 1)
    text = f"{r.get('setting')}, {streams} stream{'s' if streams != 1 else ''} x "
    text += f"{thread_text(r.get('threads'))}, batch {r.get('batch_size')}"
    if r.get("scenario") == "server" and finite(r.get("max_queue_ms")):
        text += f", queue {bound_text(r.get('max_queue_ms'))} ms"
    return text


def scenario_text(r) -> str:
    """The scenario of a row in a few words: "offline", "server at 50 req/s", "server peak under
    p99 <= 100 ms"; "single-stream"."""
    scenario = r.get("scenario") or SINGLE_STREAM
    if scenario != "server":
        return scenario
    if searched(r):
        return f"server peak under p99 {LESS_OR_EQUAL} {bound_text(r.get('target_p99_ms'))} ms"
    return f"server at {fmt(finite(r.get('rate')) or r.get('offered_rate'))} req/s"


def known(value) -> bool | None:
    """A recorded flag as a bool (a frame holds numpy bools, or None and NaN where unrecorded)."""
    return None if value is None or pd.isna(value) else bool(value)


def sustained_text(value) -> str:
    flag = known(value)
    return "" if flag is None else ("yes" if flag else "no")


def _ok(frame: pd.DataFrame) -> pd.DataFrame:
    ok = frame[(frame["status"] == "ok") & (frame["mode"] == "inference")]
    return by_input(ok, threads=False)


def _tries(r) -> list[dict]:
    tries = r.get("peak_tries")
    return [t for t in tries if isinstance(t, dict)] if isinstance(tries, list) else []


@dataclass(frozen=True)
class Opener:
    """What one model serves on one device, and from which rows that was read."""

    model: str
    device: str
    rate: float | None  # images (requests of one image) per second; None: no ok row says
    p99_ms: float | None  # the bound met (a peak search), else the chosen row's p99
    source: str  # "peak", "fixed", "offline" or "single-stream"
    row: pd.Series | None  # the row the answer comes from
    unmet: list[pd.Series]  # peak searches that found no rate meeting their bound
    unsustained: list[pd.Series]  # fixed-rate server rows whose rate was not sustained
    scenarios: tuple[str, ...] = ()  # the scenarios of this model's ok rows on this device


def openers(frame: pd.DataFrame) -> list[Opener]:
    """Per model and device, the highest rate served and its p99 bound: from the peak searches that
    met their bound (the highest peak; its bound), else from sustained fixed-rate server rows (the
    highest achieved rate; its p99), else from offline and single-stream rows (the highest images/s;
    its p99). A rate that was not sustained is never the answer."""
    ok = _ok(frame)
    out = []
    for (model, device), part in ok.groupby(["model", "device"], sort=False):
        server = part[part["scenario"] == "server"]
        peaks = server[server["target_p99_ms"].notna()]
        met = peaks[pd.to_numeric(peaks["offered_rate"], errors="coerce").notna()]
        unmet = [r for _, r in peaks.drop(met.index).iterrows()]
        fixed = server[server["target_p99_ms"].isna()]
        over = [r for _, r in fixed.iterrows() if known(r["sustained"]) is False]
        fixed = fixed[(fixed["sustained"] == True) & fixed["latency_ms_p99"].notna()]  # noqa: E712
        fixed = fixed[pd.to_numeric(fixed["achieved_rate"], errors="coerce").notna()]
        rest = part[part["scenario"].isin(["offline", SINGLE_STREAM])]
        rest = rest[pd.to_numeric(rest["throughput_ips"], errors="coerce").notna()]
        if not met.empty:
            row = met.loc[pd.to_numeric(met["offered_rate"]).idxmax()]
            opener = (row["offered_rate"], row["target_p99_ms"], "peak", row)
        elif not fixed.empty:
            row = fixed.loc[pd.to_numeric(fixed["achieved_rate"]).idxmax()]
            opener = (row["achieved_rate"], row["latency_ms_p99"], "fixed", row)
        elif not rest.empty:
            row = rest.loc[pd.to_numeric(rest["throughput_ips"]).idxmax()]
            opener = (row["throughput_ips"], row["latency_ms_p99"], row["scenario"], row)
        else:
            opener = (None, None, "", None)
        rate, p99, source, row = opener
        scenarios = tuple(dict.fromkeys(part["scenario"]))
        out.append(
            Opener(model, device, finite(rate), finite(p99), source, row, unmet, over, scenarios)
        )
    return out


def _why(o: Opener) -> str:
    r = o.row
    if o.source == "peak":
        rates = [finite(t.get("rate")) for t in _tries(r)]
        rates = [x for x in rates if x is not None]
        said = f"server: the highest of {len(rates)} rates tried whose p99 met the bound"
        if rates and o.rate is not None and o.rate >= max(rates):
            said += "; it is the highest rate tried, so the peak may lie above it"
        return said
    if o.source == "fixed":
        offered = finite(r.get("offered_rate")) or finite(r.get("rate"))
        return f"server at {fmt(offered)} req/s offered, sustained; no p99 bound was searched"
    served = "; no server rate was sustained" if o.unmet or o.unsustained else ""
    if o.source == "offline":
        return "offline: every stream busy" + served
    if not set(o.scenarios) & set(SERVING_SCENARIOS):
        return "single-stream: one call at a time; no offline or server row of this model"
    faster = ", faster than its offline rows" if "offline" in o.scenarios else ""
    return "single-stream: one call at a time" + faster + served


def opener_lines(frame: pd.DataFrame) -> list[str]:
    """The summary's opening sentences, one per model and device ("resnet18 on cpu serves 412 img/s
    at p99 <= 100 ms with ..."), and one per model and device whose peak searches found no rate.
    None for a run of single-stream rows alone: its answers table says what it measured."""
    if serving(frame).empty:
        return []
    lines = []
    for o in openers(frame):
        if o.rate is not None:
            bound = bound_text(o.p99_ms) if o.source == "peak" else fmt(o.p99_ms)
            p99 = (
                f"p99 {LESS_OR_EQUAL} {bound} ms" if o.p99_ms is not None else "a p99 not recorded"
            )
            lines.append(
                f"{o.model} on {o.device} serves {fmt(o.rate)} img/s at {p99} with "
                f"{shape_text(o.row)}{flags(o.row)} ({_why(o)})"
            )
        if o.unmet:
            said = [f"{shape_text(r)} (p99 {LESS_OR_EQUAL} {bound_text(r['target_p99_ms'])} ms, "
                    f"{_tried(r)})" for r in o.unmet]  # fmt: skip
            lines.append(
                f"{o.model} on {o.device}: no rate met the p99 bound with {'; '.join(said)}"
            )
        if o.rate is None and o.unsustained:
            said = [f"{shape_text(r)} at {fmt(r['rate'])} req/s" for r in o.unsustained]
            lines.append(
                f"{o.model} on {o.device}: no rate offered was sustained: {'; '.join(said)}"
            )
    return lines


def _tried(r) -> str:
    rates = sorted(x for x in (finite(t.get("rate")) for t in _tries(r)) if x is not None)
    if not rates:
        return "no tries recorded"
    return (
        f"{len(rates)} rate{'s' if len(rates) != 1 else ''} tried, the lowest {fmt(rates[0])} req/s"
    )


def serving_rows(part: pd.DataFrame) -> pd.DataFrame:
    """The offline and server rows of ``part`` (one device), a row each: how it ran, the rate
    offered and achieved, whether it was sustained, images/s, the per-request latencies and the
    batches the batcher formed. A column only where some row has it; blank latencies where a rate
    was not sustained."""
    rows_in = by_input(serving(part), threads=False)
    server = rows_in["scenario"] == "server"
    has_queue = bool((pd.to_numeric(rows_in["max_queue_ms"], errors="coerce").fillna(0) > 0).any())
    has_bound = bool(rows_in["target_p99_ms"].notna().any())
    rows = []
    for _, r in rows_in.iterrows():
        ok = r["status"] == "ok"
        late = (
            ok and known(r.get("sustained")) is not False
        )  # never a latency for a rate not sustained
        row = {
            "model": r["model"],
            "batch": r["batch_size"],
            "setting": r["setting"] + flags(r),
            "scenario": r["scenario"],
            "streams": r["streams"],
            "threads": r["threads"],
        }
        if has_queue:
            row["queue ms"] = bound_text(r["max_queue_ms"]) if r["scenario"] == "server" else ""
        if server.any():
            row["offered req/s"] = _offered(r) if ok else ""
        if has_bound:
            row["p99 bound ms"] = bound_text(r["target_p99_ms"])
        if server.any():
            row["achieved req/s"] = fmt(r["achieved_rate"]) if ok else ""
            row["sustained"] = sustained_text(r["sustained"]) if ok else ""
        row |= {
            "img/s": fmt(r["throughput_ips"]) if ok else "",
            "median ms": fmt(r["latency_ms_median"], 2) if late else "",
            "p99 ms": fmt(r["latency_ms_p99"], 2) if late else "",
            "p99.9 ms": fmt(r["latency_ms_p999"], 2) if late else "",
            "mean batch": fmt(r["mean_batch"], 2) if ok else "",
            "max batch": fmt(r["max_batch"], 0) if ok else "",
            "status": r["status"] if ok else f"{r['status']}: {str(r['error'] or '')[:60]}",
        }
        rows.append(row)
    return pd.DataFrame(rows)


def _offered(r) -> str:
    if searched(r):
        peak = finite(r.get("offered_rate"))
        return f"peak {fmt(peak)}" if peak is not None else "none met the bound"
    return fmt(finite(r.get("offered_rate")) or finite(r.get("rate")))


LEGEND = (
    "Offline: every stream busy with full batches; images/s over the wall time. Server: requests "
    "of one image arrive as a Poisson process at the offered rate and a dynamic batcher groups "
    "them (up to the batch size, or until the queue window passes); images/s is the achieved rate. "
    "Their latencies are per request: offline, the call that served it; server, from its "
    "scheduled arrival to its completion. A rate not sustained (the queue grew without bound) has "
    "no latency: the cells are blank, never a figure. `peak`: the highest rate a search found "
    "whose p99 met the bound. `streams x threads`: independent executors, each with its own "
    "intra-op threads."
)


@dataclass(frozen=True)
class Point:
    """One offered rate of a latency curve."""

    rate: float  # requests offered per second
    p99_ms: float | None  # None: not sustained (no latency), or none recorded
    sustained: bool
    met: bool | None  # a peak search's try: whether it met the bound; None for a fixed rate
    achieved_rate: float | None
    mean_batch: float | None
    peak: bool = False  # the rate the search found


@dataclass(frozen=True)
class Line:
    label: str  # shape_text: setting, streams x threads, batch (and queue)
    setting: str
    points: list[Point]  # by rate


@dataclass(frozen=True)
class Panel:
    """One model on one device: a line per setting, streams, threads and batch, and the bounds."""

    device: str
    model: str
    lines: list[Line]
    bounds: list[float]  # the p99 bounds searched under (a horizontal line each)


def _points(r) -> list[Point]:
    if not searched(r):
        rate = finite(r.get("offered_rate")) or finite(r.get("rate"))
        if rate is None:
            return []
        sustained = known(r.get("sustained")) is True
        p99 = finite(r.get("latency_ms_p99")) if sustained else None
        return [Point(rate, p99, sustained, None, finite(r.get("achieved_rate")),
                      finite(r.get("mean_batch")))]  # fmt: skip
    peak = finite(r.get("offered_rate"))
    out = []
    for t in _tries(r):
        rate = finite(t.get("rate"))
        if rate is None:
            continue
        sustained = known(t.get("sustained")) is True
        p99 = finite(t.get("latency_ms_p99")) if sustained else None
        met = known(t.get("met"))
        out.append(Point(rate, p99, sustained, met, finite(t.get("achieved_rate")),
                         finite(t.get("mean_batch")), peak=rate == peak and bool(met)))  # fmt: skip
    return out


def latency_panels(frame: pd.DataFrame) -> list[Panel]:
    """The latency-against-offered-rate plot's panels: per device and model with server rows, a
    line per (setting, streams, threads, batch, queue) through every fixed rate and every rate a
    peak search tried."""
    ok = _ok(frame)
    ok = ok[ok["scenario"] == "server"]
    panels = []
    for (device, model), part in ok.groupby(["device", "model"], sort=False):
        lines: dict[tuple, list[Point]] = {}
        labels: dict[tuple, tuple[str, str]] = {}
        for _, r in part.iterrows():
            key = (r["setting"], r["streams"], r["threads"], r["batch_size"], r["max_queue_ms"])
            lines.setdefault(key, []).extend(_points(r))
            labels[key] = (shape_text(r), r["setting"])
        drawn = [
            Line(labels[k][0], labels[k][1], sorted(p, key=lambda x: x.rate))
            for k, p in lines.items()
            if p
        ]
        bounds = sorted({float(b) for b in part["target_p99_ms"].dropna()})
        if drawn:
            panels.append(Panel(device, model, drawn, bounds))
    return panels
