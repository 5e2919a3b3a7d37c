"""The latency-against-offered-rate plot: p99 (log) against the rate offered, a panel per model and
device, a line per setting, streams, threads and batch (``serving.latency_panels``).

Every fixed-rate server row and every rate a peak search tried is a point. A rate that was not
sustained has no latency, so it is drawn as a cross at the panel's top edge, never at a height; a
searched bound is a horizontal dashed line, and the peak found a ringed point. ``plots/
latency_rate_<device>.png`` here (the run's one colour per setting, ``plots.colours``), and the same
panels with Plotly for report.html (``latency_figure``).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from resbench.report.plots import colours, label_log_axis, log_ticks, pyplot, safe, tick_label
from resbench.report.serving import Line, Panel, latency_panels
from resbench.report.text import fmt

STYLES = ("-", "--", ":", "-.")  # lines of one setting at other streams, threads or batches
MARKERS = ("o", "s", "^", "D")
PLOTLY_DASH = {"-": "solid", "--": "dash", ":": "dot", "-.": "dashdot"}
PLOTLY_MARKER = {"o": "circle", "s": "square", "^": "triangle-up", "D": "diamond"}
TOP = "not sustained: no latency (drawn at the top edge)"


def png_name(device: str) -> str:
    return f"latency_rate_{safe(device)}.png"


def _styles(panel: Panel) -> list[tuple[str, str]]:
    """(line style, marker) per line: the n-th line of a setting in the panel gets the n-th."""
    seen: dict[str, int] = {}
    out = []
    for line in panel.lines:
        n = seen.get(line.setting, 0)
        seen[line.setting] = n + 1
        out.append((STYLES[n % len(STYLES)], MARKERS[n % len(MARKERS)]))
    return out


def y_range(panel: Panel) -> tuple[float, float]:
    """The p99s and bounds of a panel with some room; a decade around 10 ms where there are none."""
    ys = [p.p99_ms for line in panel.lines for p in line.points if p.p99_ms] + panel.bounds
    ys = [y for y in ys if y > 0 and math.isfinite(y)]
    if not ys:
        return 3.0, 30.0
    return min(ys) / 1.5, max(ys) * 1.5


def _hover(line: Line, p) -> str:
    bits = [line.label, f"offered {fmt(p.rate)} req/s"]
    bits.append(f"p99 {fmt(p.p99_ms, 2)} ms" if p.p99_ms is not None else "not sustained")
    if p.achieved_rate is not None:
        bits.append(f"achieved {fmt(p.achieved_rate)} req/s")
    if p.mean_batch is not None:
        bits.append(f"mean batch {fmt(p.mean_batch, 2)}")
    if p.met is not None:
        bits.append("met the bound" if p.met else "missed the bound")
    if p.peak:
        bits.append("the peak found")
    return "<br>".join(bits)


def latency_plot(plt, shown: list[Panel], colour: dict[str, str], title: str):
    from matplotlib.transforms import blended_transform_factory

    cols = min(3, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.4 * cols, 5.0 * rows), squeeze=False)
    for i, (ax, panel) in enumerate(zip(axes.flat, shown, strict=False)):
        top = blended_transform_factory(ax.transData, ax.transAxes)
        for line, (style, marker) in zip(panel.lines, _styles(panel), strict=True):
            c = colour.get(line.setting, "black")
            placed = [p for p in line.points if p.p99_ms is not None]
            ax.plot([p.rate for p in placed], [p.p99_ms for p in placed], color=c, ls=style,
                    marker=marker, label=line.label)  # fmt: skip
            peak = [p for p in placed if p.peak]
            ax.scatter([p.rate for p in peak], [p.p99_ms for p in peak], s=160, facecolors="none",
                       edgecolors=c, linewidths=1.4, gid="peak")  # fmt: skip
            over = [p.rate for p in line.points if p.p99_ms is None and not p.sustained]
            ax.scatter(over, [0.97] * len(over), transform=top, marker="x", color=c, s=50,
                       clip_on=False, gid="not_sustained")  # fmt: skip
        for bound in panel.bounds:
            ax.axhline(bound, color="black", lw=1.1, ls="--", gid="bound",
                       label=f"p99 bound {bound:g} ms")  # fmt: skip
        ax.set_yscale("log")
        ax.set_ylim(*y_range(panel))
        label_log_axis(ax.yaxis, *ax.get_ylim())
        rates = [p.rate for line in panel.lines for p in line.points]
        ax.set_xlim(0, max(rates) * 1.06)  # the crosses at the top edge do not widen the axis
        ax.set_title(f"{panel.model} on {panel.device}", fontsize=9)
        ax.set_xlabel("offered rate (requests/s, one image each)")
        if i % cols == 0:  # the first column's only: the others' would cross the figure's title
            ax.set_ylabel("p99 latency (ms, arrival to completion)")
        ax.grid(True, which="both", alpha=0.25)
        ax.scatter([], [], marker="x", color="grey", label=TOP)
        # below the axis label, not over it
        ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    for ax in list(axes.flat)[len(shown) :]:
        ax.axis("off")
    fig.tight_layout(rect=(0, 0, 1, 0.95))  # room above the panels' titles for the figure's
    fig.suptitle(title + " (ringed: the peak a search found)", fontsize=9)
    return fig


def write_latency_plots(frame: pd.DataFrame, plots_dir: Path) -> list[Path]:
    """plots/latency_rate_<device>.png for each device with server rows; else nothing."""
    panels = latency_panels(frame)
    if not panels:
        return []
    plt = pyplot()
    plots_dir.mkdir(parents=True, exist_ok=True)
    colour = colours(frame["setting"])  # the colours of the run's other plots
    written = []
    for device in dict.fromkeys(p.device for p in panels):
        shown = [p for p in panels if p.device == device]
        fig = latency_plot(plt, shown, colour, f"p99 latency against offered rate, {device}")
        path = plots_dir / png_name(device)
        fig.savefig(path, dpi=90, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    return written


def latency_figure(shown: list[Panel], colour: dict[str, str], title: str):
    """The PNG's panels as one interactive figure: hover names the line, rate, p99 and batch."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    cols = min(3, len(shown))
    rows = math.ceil(len(shown) / cols)
    titles = [f"{p.model} on {p.device}" for p in shown]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, vertical_spacing=0.5 / rows)
    named: set[str] = set()  # a legend entry once per line label, however many panels draw it
    for i, panel in enumerate(shown):
        row, col = i // cols + 1, i % cols + 1
        lo, hi = y_range(panel)
        for line, (style, marker) in zip(panel.lines, _styles(panel), strict=True):
            c = colour.get(line.setting, "black")
            placed = [p for p in line.points if p.p99_ms is not None]
            symbols = [PLOTLY_MARKER[marker] + ("-open" if p.peak else "") for p in placed]
            fig.add_trace(
                go.Scatter(x=[p.rate for p in placed], y=[p.p99_ms for p in placed],
                           mode="lines+markers", name=line.label, legendgroup=line.label,
                           showlegend=line.label not in named,
                           line={"color": c, "dash": PLOTLY_DASH[style]},
                           marker={"symbol": symbols,
                                   "size": [14 if p.peak else 8 for p in placed]},
                           hovertext=[_hover(line, p) for p in placed], hoverinfo="text"),
                row=row, col=col,
            )  # fmt: skip
            named.add(line.label)
            over = [p for p in line.points if p.p99_ms is None and not p.sustained]
            if over:
                fig.add_trace(
                    go.Scatter(x=[p.rate for p in over], y=[hi / 1.1] * len(over), mode="markers",
                               name=f"{line.label}: not sustained", legendgroup=line.label,
                               showlegend=False, marker={"symbol": "x", "color": c, "size": 9},
                               hovertext=[_hover(line, p) for p in over], hoverinfo="text"),
                    row=row, col=col,
                )  # fmt: skip
        right = max(p.rate for line in panel.lines for p in line.points) * 1.06
        for bound in panel.bounds:  # a trace, not add_hline: its label would sit at 10^bound
            name = f"p99 bound {bound:g} ms"
            fig.add_trace(
                go.Scatter(x=[0, right], y=[bound, bound], mode="lines", name=name,
                           legendgroup=name, showlegend=name not in named, hoverinfo="name",
                           line={"color": "black", "dash": "dash", "width": 1.1}),
                row=row, col=col,
            )  # fmt: skip
            named.add(name)
        ticks = log_ticks(lo, hi)
        extra = {"tickvals": ticks, "ticktext": [tick_label(t) for t in ticks]} if ticks else {}
        fig.update_yaxes(type="log", range=[math.log10(lo), math.log10(hi)], row=row, col=col,
                         title_text="p99 ms", **extra)  # fmt: skip
        fig.update_xaxes(title_text="offered req/s", rangemode="tozero", row=row, col=col)
    fig.update_layout(
        title=f"{title} (crosses at the top: not sustained, no latency; large open markers: the "
        "peak a search found; dashed: the p99 bound)",
        height=380 * rows + 140,
        template="plotly_white",
    )
    return fig


def latency_figures(frame: pd.DataFrame) -> list:
    """One interactive figure per device with server rows, for report.html."""
    panels = latency_panels(frame)
    colour = colours(frame["setting"])
    return [
        latency_figure([p for p in panels if p.device == d], colour, f"p99 against rate, {d}")
        for d in dict.fromkeys(p.device for p in panels)
    ]
