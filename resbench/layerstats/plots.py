"""The layer statistics' plots: both variants on the same axes, feature maps, and depths."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from resbench.report import pyplot


def plot_pair(frame: pd.DataFrame, y: str, ylabel: str, path: Path, log: bool, title: str) -> None:
    from matplotlib.ticker import FixedLocator

    plt = pyplot()

    name = "block" if "block" in frame else "layer"
    names = frame.drop_duplicates("index").set_index("index")[name].sort_index()
    fig, ax = plt.subplots(figsize=(max(7, 0.14 * len(names)), 4.5))
    for (model, variant), part in frame.groupby(["model", "variant"], sort=False):
        ax.plot(part["index"], part[y], marker=".", label=f"{model} {variant}")
    if log:
        ax.set_yscale("log")
    step = max(1, math.ceil(len(names) / 40))  # at most ~40 names fit under the axis
    shown = names.index[::step]
    ax.xaxis.set_major_locator(FixedLocator(shown))
    ax.set_xticks(shown, [names[k] for k in shown], rotation=90, fontsize=7)
    ax.set_xlabel(f"{name} (input side first)" + (f"; one name in {step}" if step > 1 else ""))
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def feature_maps(model: nn.Module, image: torch.Tensor, path: Path, channels: int = 6) -> None:
    """The stem's filters, and a few channels of the activation after each stage, for one image."""
    plt = pyplot()

    model.eval()
    stages = [n for n in model.stage_names if n.startswith("layer")]
    maps = {}
    hooks = [getattr(model, s).register_forward_hook(lambda m, i, o, s=s: maps.__setitem__(s, o[0].detach()))
             for s in stages]  # fmt: skip
    with torch.no_grad():
        model(image[None])
    for h in hooks:
        h.remove()
    filters = model.conv1.weight.detach().cpu()
    n_filters = min(16, filters.shape[0])
    cols = max(n_filters, channels)
    fig, axes = plt.subplots(
        1 + len(stages), cols, figsize=(cols * 0.95, (1 + len(stages)) * 1.35), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    for k in range(n_filters):
        f = filters[k]
        f = (f - f.min()) / (f.max() - f.min() + 1e-12)
        axes[0, k].imshow(
            f.permute(1, 2, 0).numpy() if f.shape[0] == 3 else f[0].numpy(), interpolation="nearest"
        )
        axes[0, k].set_title(f"filter {k}", fontsize=6)
    axes[0, 0].text(0, 1.35, "stem conv1 filters (RGB, each scaled to its own range)",
                    transform=axes[0, 0].transAxes, fontsize=8)  # fmt: skip
    for r, s in enumerate(stages, start=1):
        shown = maps[s][: min(channels, maps[s].shape[0])].cpu()
        low, high = float(shown.min()), float(shown.max())
        for c in range(len(shown)):
            image_ = axes[r, c].imshow(shown[c].numpy(), cmap="viridis", vmin=low, vmax=high)
            axes[r, c].set_title(f"channel {c}", fontsize=6)
        axes[r, 0].text(0, 1.3, f"after {s} ({maps[s].shape[0]} channels, "
                        f"{maps[s].shape[1]}x{maps[s].shape[2]})", transform=axes[r, 0].transAxes,
                        fontsize=8)  # fmt: skip
        if len(shown) < cols:  # the colour bar in the first free column of the row
            cax = axes[r, len(shown)].inset_axes([0.0, 0.0, 0.15, 1.0])
            fig.colorbar(image_, cax=cax, label="activation")
    fig.suptitle(
        f"Feature maps of one input image, {type(model).__name__} (eval mode)", fontsize=10
    )
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.86, hspace=0.75)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def depth_plot(df: pd.DataFrame, path: Path, pair: str) -> None:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 4))
    for variant, part in df.groupby("variant", sort=False):
        ax.plot(part["depth"], part["first_layer_grad_norm"], marker="o", label=variant)
    ax.set_yscale("log")
    ax.set_xlabel("depth (layers)")
    ax.set_ylabel("first-layer gradient norm")
    ax.set_title(f"Gradient reaching the first layer, {pair}", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
