"""PNG plots of a run (matplotlib, Agg): throughput against batch size, speed-ups, a roofline.

One colour per setting across every plot of a run (``colours``); noisy, throttled or loaded points
are drawn hollow; error bars run from images/s at the p75 latency to images/s at the p25 latency.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from resbench.report.analysis import (
    BASELINE_SETTING,
    OVERHEAD_FRACTION,
    by_input,
    ceilings,
    ips_at_quartiles,
    placed,
    roof_bandwidth,
    roofline,
    row_flagged,
    row_loaded,
    setting_order,
    speedups_per_batch,
)

# matplotlib's tab10 then tab20's lighter half: distinct colours, colour-blind friendlier first
PALETTE = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#aec7e8",
    "#ffbb78",
    "#98df8a",
    "#ff9896",
    "#c5b0d5",
    "#c49c94",
]


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display needed); every tool plots so."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def colours(settings) -> dict[str, str]:
    """One colour per setting, fixed for the whole run (the order of ``setting_order``)."""
    return {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(setting_order(settings))}


def safe(text: str) -> str:
    return text.replace(":", "")


def _distrusted(frame: pd.DataFrame) -> pd.Series:
    return pd.Series(
        [
            row_flagged(n, t) or row_loaded(f)
            for n, t, f in zip(
                frame["noisy"], frame["throttled"], frame["foreign_cpu"], strict=True
            )
        ],
        index=frame.index,
        dtype=bool,
    )


ERROR_BARS = "bars: images/s at the p75 to the p25 latency"


def quartile_bars(line: pd.DataFrame) -> np.ndarray:
    """Asymmetric error bars (below, above) around each row's images/s, from ``ips_at_quartiles``.

    NaN where a row has no raw samples: no bar, rather than a made-up one. The median of repeat
    medians can sit just outside the pooled quartiles; that side's bar is then 0, never negative.
    """
    low, high = ips_at_quartiles(line)
    ips = line["throughput_ips"].astype(float).to_numpy()
    return np.vstack([np.maximum(ips - low, 0), np.maximum(high - ips, 0)])  # NaN stays NaN


def log_ticks(lo: float, hi: float) -> list[float]:
    """Tick values for a log axis over [lo, hi]: 1, 2, 5 x 10^k (the decades alone over many
    decades); finer round numbers over a narrow range, and even steps over a very narrow one."""
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo < hi):
        return []
    decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    close = 1 + 1e-9
    for mantissas in ((1, 2, 5), (1, 1.5, 2, 3, 4, 5, 6, 8)):
        pick = [m * 10.0**k for k in decades for m in mantissas]
        pick = [t for t in pick if lo <= t * close and t <= hi * close]
        if len(pick) > 10:
            pick = [t for t in pick if abs(math.log10(t) - round(math.log10(t))) < 1e-9]
        if len(pick) >= 3:
            return pick
    rough = (hi - lo) / 4
    scale = 10.0 ** math.floor(math.log10(rough))
    step = next(m * scale for m in (1, 2, 2.5, 5, 10) if m * scale >= rough)
    first = math.ceil(lo / step * (1 - 1e-9))
    return [n * step for n in range(first, math.floor(hi / step * close) + 1)]


def tick_label(value: float) -> str:
    """A log-axis tick as a plain number, alike for every tick: 0.02, 0.75, 20, 1,000, 1e-05."""
    return f"{value:,g}"


def label_log_axis(axis, lo: float, hi: float) -> None:
    """A matplotlib log axis ticked by ``log_ticks``, with no labels on its minor ticks."""
    from matplotlib.ticker import FixedLocator, NullFormatter

    ticks = log_ticks(lo, hi)
    if not ticks:
        return
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(lambda v, _: tick_label(v))
    axis.set_minor_formatter(NullFormatter())


def throughput_plot(plt, part: pd.DataFrame, colour: dict[str, str], title: str):
    part = by_input(part)
    models = list(dict.fromkeys(part["model"]))
    cols = min(4, len(models))
    rows = math.ceil(len(models) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, model in zip(axes.flat, models, strict=False):
        sub = part[part["model"] == model]
        batches = sorted(sub["batch_size"].unique())
        for setting in setting_order(sub["setting"]):
            line = sub[sub["setting"] == setting].sort_values("batch_size")
            bad = _distrusted(line).to_numpy()
            err = quartile_bars(line)
            ax.errorbar(
                line["batch_size"],
                line["throughput_ips"],
                yerr=err,
                color=colour[setting],
                marker="o",
                capsize=3,
                label=setting,
                markerfacecolor=colour[setting],
            )
            if bad.any():
                ax.scatter(
                    line["batch_size"][bad],
                    line["throughput_ips"][bad],
                    s=90,
                    facecolors="white",
                    edgecolors=colour[setting],
                    linewidths=1.8,
                    zorder=3,
                    gid="distrusted",
                )
        if len(batches) > 1:
            ax.set_xscale("log", base=2)
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.minorticks_off()
        top = sub["throughput_ips"].to_numpy(float) + np.nan_to_num(quartile_bars(sub)[1])
        ax.set_ylim(0, 1.15 * float(np.nanmax(top)))
        ax.set_title(model, fontsize=10)
        ax.set_xlabel("batch size")
        ax.set_ylabel("images/s")
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(models) :]:
        ax.axis("off")
    handles = [
        plt.Line2D([], [], color=colour[s], marker="o", label=s)
        for s in setting_order(part["setting"])
    ]
    handles.append(
        plt.Line2D(
            [],
            [],
            color="grey",
            marker="o",
            markerfacecolor="white",
            ls="",
            markersize=9,
            label="noisy, throttled or under load",
        )
    )
    fig.legend(
        handles=handles,
        loc="upper center",
        ncol=min(6, len(handles)),
        fontsize=8,
        bbox_to_anchor=(0.5, 1.0),
        frameon=False,
    )
    fig.suptitle(f"{title}  ({ERROR_BARS})", y=1.0 + 0.3 / (3.4 * rows))
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.25 / (3.4 * rows)))
    return fig


def speedup_plot(plt, speedups: pd.DataFrame, colour: dict[str, str], title: str):
    labels = [f"{m}\nbatch {b}" for m, b in speedups.index]
    settings = list(speedups.columns)
    width = 0.8 / max(1, len(settings))
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(labels) * max(1, len(settings)) ** 0.5), 4.2))
    x = np.arange(len(labels))
    for i, setting in enumerate(settings):
        values = speedups[setting].to_numpy(dtype=float)
        bars = ax.bar(
            x + (i - (len(settings) - 1) / 2) * width,
            np.nan_to_num(values),
            width,
            color=colour[setting],
            label=setting,
        )
        ax.bar_label(
            bars,
            labels=["" if np.isnan(v) else f"{v:.2f}" for v in values],
            fontsize=7,
            rotation=90,
            padding=2,
        )
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel(f"speed-up over {BASELINE_SETTING} (x)")
    ax.set_ylim(0, np.nanmax(speedups.to_numpy(dtype=float)) * 1.25)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncol=min(4, len(settings)))
    fig.tight_layout()
    return fig


def roofline_plot(plt, roof: pd.DataFrame, colour: dict[str, str], title: str):
    fig, ax = plt.subplots(figsize=(8, 5.5))
    bw = roof_bandwidth(roof)
    ridge_at = float(roof["peak_flops"].min()) / bw if math.isfinite(bw) else math.inf
    lo = min(roof["intensity"].min(), ridge_at) / 4
    hi = roof["intensity"].max() * 3
    xs = np.geomspace(lo, hi, 200)
    for precision, peak, ceiling in ceilings(roof, xs):
        ceiling = ceiling / 1e12
        ax.plot(xs, ceiling, color="black", lw=1.2, ls="-" if precision == "fp32" else "--")
        ax.annotate(
            f"{precision} matmul peak {peak / 1e12:.2f} TFLOP/s",
            (xs[-1], peak / 1e12),
            ha="right",
            va="bottom",
            fontsize=8,
        )
        ax.plot(xs, OVERHEAD_FRACTION * ceiling, color="grey", lw=0.6, ls=":")
    if math.isfinite(bw):
        ax.annotate(
            f"memory {bw / 1e9:,.0f} GB/s",
            (xs[0], bw * xs[0] / 1e12),
            rotation=0,
            ha="left",
            va="bottom",
            fontsize=8,
        )
        ridge = ridge_at  # where the lowest peak meets the memory roof
        if math.isfinite(ridge):
            ax.axvline(ridge, color="grey", lw=0.8, ls="--")
            for text, ha in (("memory-bound \u2190 ", "right"), (" \u2192 compute-bound", "left")):
                ax.text(ridge, 0.5, text, transform=ax.get_xaxis_transform(), ha=ha, fontsize=8,
                        color="dimgrey")  # fmt: skip
    else:
        ax.text(
            0.02,
            0.02,
            "no bandwidth recorded for this run: compute ceiling only",
            transform=ax.transAxes,
            fontsize=8,
        )
    for setting in setting_order(roof["setting"]):
        sub = roof[roof["setting"] == setting]
        bad = _distrusted(sub).to_numpy()
        ax.scatter(
            sub["intensity"][~bad],
            sub["achieved_flops"][~bad] / 1e12,
            color=colour[setting],
            label=setting,
            s=30,
        )
        ax.scatter(
            sub["intensity"][bad],
            sub["achieved_flops"][bad] / 1e12,
            facecolors="white",
            edgecolors=colour[setting],
            s=30,
            linewidths=1.5,
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    label_log_axis(ax.xaxis, *ax.get_xlim())
    label_log_axis(ax.yaxis, *ax.get_ylim())
    ax.set_xlabel("arithmetic intensity (FLOPs per byte moved, naive estimate)")
    ax.set_ylabel("achieved TFLOP/s")
    ax.set_title(
        title + "\n(dotted: 20% of the roof; below it a row is overhead-bound; "
        "hollow: noisy or under load)",
        fontsize=9,
    )
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def write_plots(frame: pd.DataFrame, env: dict, plots_dir: Path) -> list[Path]:
    """throughput_<mode>_<device>.png, speedup_<mode>_<device>.png and roofline_<device>.png."""
    plt = pyplot()
    ok = frame[frame["status"] == "ok"].dropna(subset=["throughput_ips"])
    plots_dir.mkdir(parents=True, exist_ok=True)
    colour = colours(frame["setting"])
    written: list[Path] = []

    def save(fig, name: str) -> None:
        path = plots_dir / name
        fig.savefig(path, dpi=90, bbox_inches="tight")
        plt.close(fig)
        written.append(path)

    for (device, mode), part in ok.groupby(["device", "mode"], sort=False):
        save(
            throughput_plot(plt, part, colour, f"Throughput, {mode}, {device}"),
            f"throughput_{mode}_{safe(device)}.png",
        )
        speedups = speedups_per_batch(part)
        if not speedups.empty:
            title = f"Speed-up over fp32/contiguous/eager, {mode}, {device}, per batch size"
            save(speedup_plot(plt, speedups, colour, title), f"speedup_{mode}_{safe(device)}.png")
    for device, part in ok.groupby("device", sort=False):
        roof, note = placed(roofline(part, env))
        if not roof.empty:
            title = f"Roofline, {device}: each ok result (all modes){note}"
            save(roofline_plot(plt, roof, colour, title), f"roofline_{safe(device)}.png")
    return written
