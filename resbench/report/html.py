"""report.html: one self-contained page per run (or comparison), readable offline from disk.

Plotly draws the interactive plots (hover shows a point's Config and numbers): it is well kept,
ships its whole JavaScript as one file inside the Python package (copied beside the page, so no
network is needed), and its figures are plain data, so the page needs no server. The table of
every result is ``table_html``'s.
"""

from __future__ import annotations

import html
import json
import math
import shutil
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from resbench.report.analysis import (
    MAX_ACCURACY_DROP,
    by_input,
    ceilings,
    finite,
    placed,
    roof_bandwidth,
    roofline,
    setting_order,
    single_stream,
)
from resbench.report.loading import beat_peak
from resbench.report.plots import ERROR_BARS, colours, log_ticks, quartile_bars, tick_label
from resbench.report.serving_plot import latency_figures
from resbench.report.table_html import TABLE_SCRIPT
from resbench.report.text import flags, p_text, points
from resbench.report.tradeoff import FRONT_COLOUR, ci_bars, panels, step_line

PLOTLY_JS = "plotly.min.js"

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
.headline { font-size: 1.05em; font-weight: 600; }
.warn { background: #fff4e5; border-left: 4px solid #e69500; padding: 0.4em 0.8em; margin: 0.3em 0; }
table.results { border-collapse: collapse; font-size: 0.85em; }
table.results th, table.results td { border: 1px solid #ddd; padding: 2px 6px; text-align: right; }
table.results th { background: #f3f3f3; cursor: pointer; position: sticky; top: 0; }
table.results th[aria-sort=ascending]::after { content: " \\25B2"; }
table.results th[aria-sort=descending]::after { content: " \\25BC"; }
table.results td.text { text-align: left; }
table.results td .error { display: inline-block; min-width: 14em; max-width: 22em; overflow-wrap: anywhere; }
table.results tr.distrusted td { color: #a05a00; }
table.results input { width: 6em; font-size: 0.85em; }
#filters select, #filters input { font-size: 0.85em; margin-right: 0.6em; }
.plots img { max-width: 100%; margin: 0.5em 0; border: 1px solid #eee; }
ul.env { font-size: 0.9em; }
table.dataframe { border-collapse: collapse; font-size: 0.9em; }
table.dataframe th, table.dataframe td { border: 1px solid #ddd; padding: 2px 8px; }
table.dataframe td { white-space: nowrap; }
table.dataframe th { background: #f3f3f3; }
/* the page never grows wider than the window: a wide table scrolls inside its section, a long
   text cell (a calibration, a kernel list) keeps to one line with the whole text on hover */
.scroll { max-width: 100%; overflow-x: auto; }
.warn, ul.env li { overflow-wrap: anywhere; }
table td.long { max-width: 18em; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
"""


def _hover(r) -> str:
    bits = [
        f"{r['model']} batch {r['batch_size']} {r['image_size']}px",
        f"{r['device']} {r['mode']} {r['setting']}",
        f"{r['throughput_ips']:,.1f} img/s, median {r['latency_ms_median']:.2f} ms",
    ]
    if finite(r.get("latency_ms_iqr")) is not None:
        bits.append(f"IQR {r['latency_ms_iqr']:.2f} ms")
    if beat_peak(r.get("peak_exceeded"), r.get("mfu")):
        bits.append("MFU not shown: over the probe's peak")
    elif finite(r.get("mfu")) is not None:
        bits.append(f"MFU {r['mfu']:.1%}")
    if finite(r.get("foreign_cpu")) is not None:
        bits.append(f"other processes: {r['foreign_cpu']:.2f} cores")
    if r.get("noisy") is True:
        bits.append("NOISY")
    return "<br>".join(bits)


def legend_entries(fig, settings, colour: dict[str, str], mode: str) -> None:
    """One solid legend entry per setting (a trace's own entry would copy its first marker)."""
    import plotly.graph_objects as go

    for setting in settings:
        fig.add_trace(
            go.Scatter(
                x=[None],
                y=[None],
                mode=mode,
                name=setting,
                legendgroup=setting,
                line={"color": colour[setting]},
                marker={"color": colour[setting], "size": 9},
            )
        )
    fig.add_trace(
        go.Scatter(
            x=[None],
            y=[None],
            mode="markers",
            name="open: noisy, throttled or under load",
            marker={"color": "grey", "symbol": "circle-open", "size": 9},
        )
    )


def throughput_figure(part: pd.DataFrame, colour: dict[str, str], title: str):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    part = by_input(part)
    models = list(dict.fromkeys(part["model"]))
    cols = min(4, len(models))
    rows = math.ceil(len(models) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=models, vertical_spacing=0.5 / rows)
    legend_entries(fig, setting_order(part["setting"]), colour, "lines+markers")
    for i, model in enumerate(models):
        sub = part[part["model"] == model]
        row, col = i // cols + 1, i % cols + 1
        for setting in setting_order(sub["setting"]):
            line = sub[sub["setting"] == setting].sort_values("batch_size")
            below, above = quartile_bars(line)  # NaN (no bar) where a row has no samples
            hollow = [bool(flags(r)) for _, r in line.iterrows()]
            fig.add_trace(
                go.Scatter(
                    x=[str(b) for b in line["batch_size"]],
                    y=line["throughput_ips"],
                    mode="lines+markers",
                    name=setting,
                    legendgroup=setting,
                    showlegend=False,
                    line={"color": colour[setting]},
                    marker={
                        "symbol": ["circle-open" if h else "circle" for h in hollow],
                        "size": 9,
                    },
                    error_y={"type": "data", "array": above, "arrayminus": below},
                    hovertext=[_hover(r) for _, r in line.iterrows()],
                    hoverinfo="text",
                ),
                row=row,
                col=col,
            )
        fig.update_xaxes(title_text="batch size", type="category", row=row, col=col)
        fig.update_yaxes(title_text="images/s", rangemode="tozero", row=row, col=col)
    fig.update_layout(
        title=f"{title} (open markers: noisy, throttled or under load; {ERROR_BARS})",
        height=300 * rows + 120,
        template="plotly_white",
    )
    return fig


def roofline_figure(roof: pd.DataFrame, colour: dict[str, str], title: str):
    import numpy as np
    import plotly.graph_objects as go

    fig = go.Figure()
    legend_entries(fig, setting_order(roof["setting"]), colour, "markers")
    xs = np.geomspace(roof["intensity"].min() / 3, roof["intensity"].max() * 3, 100)
    bw = roof_bandwidth(roof)
    for precision, peak, ceiling in ceilings(roof, xs):
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ceiling / 1e12,
                mode="lines",
                line={"color": "black", "dash": "solid" if precision == "fp32" else "dash"},
                name=f"roof: {precision} peak {peak / 1e12:.2f} TFLOP/s"
                + (f", {bw / 1e9:,.0f} GB/s" if math.isfinite(bw) else ""),
            )
        )
    for setting in setting_order(roof["setting"]):
        sub = roof[roof["setting"] == setting]
        fig.add_trace(
            go.Scatter(
                x=sub["intensity"],
                y=sub["achieved_flops"] / 1e12,
                mode="markers",
                name=setting,
                legendgroup=setting,
                showlegend=False,
                marker={
                    "color": colour[setting],
                    "size": 9,
                    "symbol": ["circle-open" if flags(r) else "circle" for _, r in sub.iterrows()],
                },
                hovertext=[
                    _hover(r) + f"<br>{r['intensity']:.1f} FLOP/B, bound: {r['bound'] or '?'}"
                    for _, r in sub.iterrows()
                ],
                hoverinfo="text",
            )
        )
    ys = [*(roof["achieved_flops"] / 1e12)]
    ys += [v for _, _, c in ceilings(roof, xs) for v in (c / 1e12)]
    ys = [y for y in ys if math.isfinite(y) and y > 0]
    fig.update_xaxes(
        type="log",
        title_text="arithmetic intensity (FLOPs per byte, naive estimate)",
        **_log_ticks(xs[0], xs[-1]),
    )
    fig.update_yaxes(type="log", title_text="achieved TFLOP/s", **_log_ticks(min(ys), max(ys)))
    fig.update_layout(title=title, height=520, template="plotly_white")
    return fig


def tradeoff_figure(shown, colour: dict[str, str], max_drop: float):
    """plots/accuracy_tradeoff.png's panels (``tradeoff.panels``) as one interactive figure."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    cols = min(3, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[p.title for p in shown],
                        vertical_spacing=0.5 / rows)  # fmt: skip
    for i, panel in enumerate(shown):
        row, col = i // cols + 1, i % cols + 1
        data = panel.rows
        below, above = ci_bars(data)
        fig.add_trace(
            go.Scatter(
                x=data["accuracy_drop"],
                y=data["throughput_ips"],
                mode="markers+text",
                text=[r["setting"] + flags(r) for _, r in data.iterrows()],
                textposition="top right",
                marker={
                    "color": [colour[s] for s in data["setting"]],
                    "symbol": ["circle-open" if flags(r) else "circle" for _, r in data.iterrows()],
                    "size": 10,
                },
                error_x={"type": "data", "array": above, "arrayminus": below},
                hovertext=[_hover(r) + "<br>" + _accuracy_hover(r) for _, r in data.iterrows()],
                hoverinfo="text",
                showlegend=False,
            ),
            row=row,
            col=col,
        )
        xs, ys = step_line(panel.front)
        fig.add_trace(
            go.Scatter(x=xs, y=ys, mode="lines+markers", name="Pareto front", showlegend=i == 0,
                       line={"color": FRONT_COLOUR, "dash": "dash"},
                       marker={"symbol": "circle-open", "size": 16, "color": FRONT_COLOUR}),
            row=row, col=col,
        )  # fmt: skip
        fig.add_vline(x=max_drop, line={"color": "black", "width": 1.2, "dash": "dashdot"},
                      row=row, col=col)  # fmt: skip
        fig.update_xaxes(title_text="top-1 drop against fp32 eager (points)", row=row, col=col)
        fig.update_yaxes(title_text="images/s", rangemode="tozero", row=row, col=col)
    fig.update_layout(
        title=f"Speed against accuracy (dash-dotted: the allowed drop, {points(max_drop)}; circled: "
        "the Pareto front; bars: the drop's 95% interval)",
        height=380 * rows + 120,
        template="plotly_white",
    )
    return fig


def _accuracy_hover(r) -> str:
    bits = [f"top-1 {r['top1_accuracy']:.2%}", f"drop {r['accuracy_drop']:.2f} points"]
    if finite(r.get("accuracy_drop_p")) is not None:
        bits.append(f"McNemar p {p_text(r['accuracy_drop_p'])}")
    if finite(r.get("flips_lost")) is not None and finite(r.get("flips_gained")) is not None:
        bits.append(f"lost {r['flips_lost']:.0f}, gained {r['flips_gained']:.0f}")
    return ", ".join(bits)


def _log_ticks(lo: float, hi: float) -> dict:
    """Plotly log-axis ticks as the PNG has them (plots.log_ticks): labelled numbers, no bare digits."""
    ticks = log_ticks(lo, hi)
    return {"tickvals": ticks, "ticktext": [tick_label(t) for t in ticks]} if ticks else {}


def figures_html(frame: pd.DataFrame, env: dict, max_drop: float = MAX_ACCURACY_DROP) -> list[str]:
    """The interactive plots of a run, as HTML fragments that use the page's plotly.min.js."""
    ok = frame[frame["status"] == "ok"].dropna(subset=["throughput_ips"])
    ok = single_stream(ok)  # throughput against batch; the serving rows have their own figure
    colour = colours(frame["setting"])
    figs = []
    for (device, mode), part in ok.groupby(["device", "mode"], sort=False):
        figs.append(throughput_figure(part, colour, f"Throughput, {mode}, {device}"))
    for device, part in ok.groupby("device", sort=False):
        roof, note = placed(roofline(part, env))
        if not roof.empty:
            figs.append(roofline_figure(roof, colour, f"Roofline, {device}{note}"))
    shown = [p for p in panels(single_stream(frame), max_drop) if not p.rows.empty]
    if shown:
        figs.append(tradeoff_figure(shown, colour, max_drop))
    figs += latency_figures(frame)
    return [
        f.to_html(full_html=False, include_plotlyjs=False, div_id=f"plot{i}")
        for i, f in enumerate(figs)
    ]


def copy_plotly(out_dir: Path) -> Path:
    """plotly.min.js from the installed plotly package, beside the page (offline, from disk)."""
    import plotly

    source = Path(plotly.__file__).parent / "package_data" / PLOTLY_JS
    target = out_dir / PLOTLY_JS
    if not target.exists() or target.stat().st_size != source.stat().st_size:
        shutil.copyfile(source, target)
    return target


def page(
    title: str,
    headline: str,
    warnings: Sequence[str],
    sections: Sequence[tuple[str, str]],
    env: dict,
) -> str:
    """The whole page: title, headline, warnings, then each (heading, html) section, then env."""
    warn = "".join(f'<div class="warn">{html.escape(w)}</div>' for w in warnings)
    parts = "".join(
        f'<h2>{html.escape(h)}</h2>\n<div class="scroll">{body}</div>\n' for h, body in sections
    )
    env_items = "".join(
        f"<li><b>{html.escape(str(k))}</b>: {html.escape(json.dumps(v) if not isinstance(v, str) else v)}</li>"
        for k, v in env.items()
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<script>window.__errors = []; window.addEventListener('error', e => window.__errors.push(String(e.message)));</script>
<script src="{PLOTLY_JS}"></script>
<style>{_STYLE}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p class="headline">{html.escape(headline)}</p>
{warn}
{parts}
<h2>Environment</h2>
<ul class="env">{env_items or "<li>not recorded</li>"}</ul>
<script>{TABLE_SCRIPT}</script>
</body></html>
"""


def write_page(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    copy_plotly(path.parent)
    path.write_text(text, encoding="utf-8")
    return path
