"""The accuracy trade-off drawn: images/s against accuracy drop, one point per setting.

A panel per device, mode, model and batch whose rows were scored on labelled images: each setting a
labelled point (its drop's 95% interval as a horizontal bar), the Pareto front of
``analysis.accuracy_picks`` as a step line through its points, and ``--max-accuracy-drop`` as a
vertical line. ``plots/accuracy_tradeoff.png`` here; report.html draws the same panels with Plotly
(``html.tradeoff_figure``), from the same ``panels``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from resbench.report.analysis import ROW_KEY, accuracy_picks, by_input, finite
from resbench.report.plots import colours, pyplot
from resbench.report.text import flags, points

PNG = "accuracy_tradeoff.png"
FRONT_COLOUR = (
    "#777777"  # the front's step line and rings; the bound is black (no setting's colour)
)


@dataclass(frozen=True)
class Panel:
    """One model and batch on one device: the points to draw and what could not be placed."""

    title: str
    rows: pd.DataFrame  # scored rows with a drop: accuracy_picks' columns
    front: pd.DataFrame  # rows on the Pareto front, by increasing drop (the step line's order)
    unplaced: list[str]  # settings whose accuracy (or drop) was not measured


def panels(frame: pd.DataFrame, max_drop: float) -> list[Panel]:
    """The trade-off panels of a run (none when no row was scored), each from accuracy_picks."""
    picks = accuracy_picks(by_input(frame), max_drop)
    out = []
    for key, part in picks.groupby(ROW_KEY, sort=False, dropna=False):
        device, mode, model, _, batch, *_ = key
        placed = part["measured"] & pd.to_numeric(part["accuracy_drop"]).notna()
        rows = part[placed]
        front = rows[rows["pareto"]].sort_values(["accuracy_drop", "throughput_ips"])
        unplaced = [r["setting"] + flags(r) for _, r in part[~placed].iterrows()]
        out.append(Panel(f"{model} batch {batch}, {mode} on {device}", rows, front, unplaced))
    return out


def ci_bars(rows: pd.DataFrame) -> np.ndarray:
    """(below, above) of each drop from its recorded 95% interval; NaN (no bar) where none."""
    below, above = [], []
    for drop, ci in zip(rows["accuracy_drop"], rows["accuracy_drop_ci"], strict=True):
        ends = ci if isinstance(ci, list | tuple) and len(ci) == 2 else (None, None)
        low, high = finite(ends[0]), finite(ends[1])
        below.append(max(drop - low, 0) if low is not None else math.nan)
        above.append(max(high - drop, 0) if high is not None else math.nan)
    return np.array([below, above], float)


def step_line(front: pd.DataFrame) -> tuple[list[float], list[float]]:
    """The front as a staircase: from each point across to the next one's drop, then down to it."""
    xs, ys = [], []
    for drop, ips in zip(front["accuracy_drop"], front["throughput_ips"], strict=True):
        if xs:
            xs.append(float(drop))
            ys.append(ys[-1])
        xs.append(float(drop))
        ys.append(float(ips))
    return xs, ys


def x_range(rows: pd.DataFrame, max_drop: float) -> tuple[float, float]:
    """The drops, their intervals and the bound, with room on the right for the labels."""
    ends = [max_drop, *rows["accuracy_drop"]]
    ends += [v for ci in rows["accuracy_drop_ci"] if isinstance(ci, list | tuple) for v in ci]
    ends = [v for v in map(finite, ends) if v is not None]
    lo, hi = min(ends), max(ends)
    span = hi - lo or 1.0
    return lo - 0.08 * span, hi + 0.3 * span


def tradeoff_plot(plt, shown: list[Panel], colour: dict[str, str], max_drop: float):
    cols = min(3, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.2 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, shown, strict=False):
        data = panel.rows
        bars = ci_bars(data)
        for i, (_, r) in enumerate(data.iterrows()):
            hollow = bool(flags(r))
            ax.errorbar(
                [r["accuracy_drop"]],
                [r["throughput_ips"]],
                xerr=bars[:, i : i + 1],
                color=colour[r["setting"]],
                marker="o",
                markersize=7,
                markerfacecolor="white" if hollow else colour[r["setting"]],
                capsize=3,
                ls="",
            )
            ax.annotate(
                r["setting"] + flags(r),
                (r["accuracy_drop"], r["throughput_ips"]),
                textcoords="offset points",
                xytext=(5, 5),
                fontsize=7,
            )
        xs, ys = step_line(panel.front)
        ax.plot(xs, ys, color=FRONT_COLOUR, lw=1, ls="--", zorder=0, label="Pareto front")
        ax.scatter(panel.front["accuracy_drop"], panel.front["throughput_ips"], s=150,
                   facecolors="none", edgecolors=FRONT_COLOUR, linewidths=1.2, gid="pareto")  # fmt: skip
        ax.axvline(max_drop, color="black", lw=1.2, ls="-.", gid="allowed_drop",
                   label=f"allowed drop, {points(max_drop)}")  # fmt: skip
        ax.set_xlim(*x_range(data, max_drop))
        if panel.unplaced:
            ax.text(0.02, 0.02, "accuracy not measured: " + ", ".join(panel.unplaced),
                    transform=ax.transAxes, fontsize=7, color="dimgrey")  # fmt: skip
        ax.set_ylim(0, 1.15 * float(np.nanmax(data["throughput_ips"].to_numpy(float), initial=1)))
        ax.set_title(panel.title, fontsize=9)
        ax.set_xlabel("top-1 drop against fp32 eager (points; bars: 95% interval)")
        ax.set_ylabel("images/s")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")  # slow and inaccurate: seldom a point there
    for ax in list(axes.flat)[len(shown) :]:
        ax.axis("off")
    fig.suptitle(
        "Speed against accuracy: up and to the left is better (circled: the Pareto front; "
        "hollow: noisy, throttled or under load)",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def write_tradeoff(frame: pd.DataFrame, plots_dir: Path, max_drop: float) -> list[Path]:
    """plots/accuracy_tradeoff.png when any row was scored on labelled images; else nothing."""
    shown = [p for p in panels(frame, max_drop) if not p.rows.empty]
    if not shown:
        return []
    plt = pyplot()
    plots_dir.mkdir(parents=True, exist_ok=True)
    colour = colours(frame["setting"])  # the colours of the run's other plots
    fig = tradeoff_plot(plt, shown, colour, max_drop)
    path = plots_dir / PNG
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return [path]
