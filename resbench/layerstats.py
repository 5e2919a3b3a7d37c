"""`python -m resbench.layerstats`: why residuals work, measured on a network and its plain twin.

For a registry model (freshly initialised, or from a trainer checkpoint) and the same network built
without skip connections (``residual=False``): activation mean, std and fraction of zeros after each
block; the gradient norm of every convolution (and relative to its weight norm) after one backward
pass; plots with both networks on the same axes; and feature maps. Usage::

    python -m resbench.layerstats --model small_resnet56 --device cpu --out results/layerstats
    python -m resbench.layerstats --model small_resnet20 --depths 20,56,110 --train-steps 50

"First layer" is the stem convolution and "last layer" the last convolution of the last block, so the
ratio of their gradient norms says how much of the loss's signal reaches the bottom of the network.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from resbench import cli, data, runfolder
from resbench.devices import parse_device
from resbench.models import build_model, default_image_size, list_models, model_family
from resbench.report import pyplot


@dataclass
class BlockStats:
    model: str
    variant: str  # "residual" or "plain"
    index: int  # depth order of the block
    block: str
    act_mean: float
    act_std: float
    act_zero_fraction: float


@dataclass
class GradStats:
    model: str
    variant: str
    index: int  # depth order of the convolution (0 = stem)
    layer: str
    grad_norm: float
    weight_norm: float
    grad_to_weight: float
    batch_loss: float  # the cross-entropy whose gradient this is (same for every layer of a model)


def make_batch(model_name: str, batch_size: int, seed: int, data_dir: Path | None, verify: bool):
    """Real CIFAR-10 images when --data-dir is given (CIFAR models), else random normal images."""
    gen = torch.Generator().manual_seed(seed)
    if data_dir is not None and model_family(model_name) == "cifar":
        cifar = data.load(data_dir, check=verify)
        index = torch.randperm(len(cifar.train_x), generator=gen)[:batch_size]
        return data.normalize(cifar.train_x[index]), cifar.train_y[index]
    size = default_image_size(model_name)
    classes = 10 if model_family(model_name) == "cifar" else 1000
    return (torch.randn(batch_size, 3, size, size, generator=gen),
            torch.randint(0, classes, (batch_size,), generator=gen))  # fmt: skip


def collect(model: nn.Module, name: str, variant: str, x: torch.Tensor, y: torch.Tensor):
    """One forward (train-mode BatchNorm, as in training) and one backward; stats per block and conv."""
    model.train()
    model.zero_grad(set_to_none=True)
    blocks = model.blocks()
    acts: dict[int, torch.Tensor] = {}
    hooks = [
        b.register_forward_hook(lambda m, i, o, k=k: acts.__setitem__(k, o.detach()))
        for k, b in enumerate(blocks)
    ]
    try:
        loss = F.cross_entropy(model(x), y)
        loss.backward()
    finally:
        for h in hooks:
            h.remove()
    names = {id(b): n for n, b in model.named_modules()}
    block_rows = [
        BlockStats(
            name,
            variant,
            k,
            names[id(b)],
            acts[k].mean().item(),
            acts[k].std().item(),
            (acts[k] == 0).float().mean().item(),
        )
        for k, b in enumerate(blocks)
    ]
    convs = [
        (n, m)
        for n, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and "downsample" not in n
    ]
    grad_rows = []
    for k, (n, m) in enumerate(convs):
        g, w = m.weight.grad.norm().item(), m.weight.detach().norm().item()
        grad_rows.append(
            GradStats(name, variant, k, n, g, w, g / w if w else math.nan, loss.item())
        )
    return block_rows, grad_rows


def first_last_ratio(grads: Sequence[GradStats]) -> float:
    return grads[0].grad_norm / grads[-1].grad_norm


def briefly_train(
    model: nn.Module, steps: int, x: torch.Tensor, y: torch.Tensor, lr: float = 0.05
) -> None:
    """SGD steps on the given batch set (generated data): enough to leave the initialisation."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    model.train()
    n = len(x)
    for step in range(steps):
        idx = torch.arange(step * 64, step * 64 + 64) % n
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def wide_table(frame: pd.DataFrame, name: str, values: Sequence[str], fmt: str) -> str:
    """Markdown: a row per layer (index, name), a flat column per statistic and variant."""
    table = frame.pivot_table(
        index=["index", name], columns="variant", values=list(values), sort=False
    )
    table.columns = [f"{stat} ({variant})" for stat, variant in table.columns]
    return table.map(lambda v: format(v, fmt)).reset_index().to_markdown(index=False)


def _plot_pair(frame: pd.DataFrame, y: str, ylabel: str, path: Path, log: bool, title: str) -> None:
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


def analyse(
    name: str,
    device: torch.device,
    batch,
    checkpoint: Path | None = None,
    train_steps: int = 0,
    seed: int = 0,
    train_pool=None,
):
    """Stats of the residual network and its plain twin; returns (block rows, grad rows, models).

    With ``train_steps``, each network first takes that many SGD steps on ``train_pool``.
    """
    x, y = (t.to(device) for t in batch)
    blocks, grads, models = [], [], {}
    for variant in ("residual", "plain"):
        torch.manual_seed(seed)  # the same initial weights for both where their shapes agree
        model = build_model(name, residual=variant == "residual").to(device)
        if checkpoint is not None and variant == "residual":
            runfolder.load_weights(model, name, checkpoint, device)
        if train_steps:
            briefly_train(model, train_steps, *(t.to(device) for t in train_pool))
        b, g = collect(model, name, variant, x, y)
        blocks += b
        grads += g
        models[variant] = model
    return blocks, grads, models


def run(args) -> int:
    device = parse_device(args.device)
    out: Path = args.out or Path("results") / f"layerstats-{cli.timestamp()}"
    out.mkdir(parents=True, exist_ok=True)
    verify = not args.no_verify
    # every model of one family sees the same images: the measured batch, and a pool to train on
    batch = make_batch(args.model, args.batch_size, args.seed, args.data_dir, verify)
    pool = (
        make_batch(args.model, 64 * 8, args.seed + 1, args.data_dir, verify)
        if args.train_steps
        else None
    )
    blocks, grads, models = analyse(
        args.model, device, batch, args.checkpoint, args.train_steps, args.seed, pool
    )
    with (out / "layerstats.jsonl").open("w") as f:
        for row in blocks:
            f.write(json.dumps({"kind": "activation", **asdict(row)}) + "\n")
        for row in grads:
            f.write(json.dumps({"kind": "gradient", **asdict(row)}) + "\n")
    bf, gf = pd.DataFrame(map(asdict, blocks)), pd.DataFrame(map(asdict, grads))
    when = f"after {args.train_steps} SGD steps" if args.train_steps else "at initialisation"
    if args.checkpoint:
        when = f"from {args.checkpoint}"
    _plot_pair(bf, "act_std", "activation std after each block", out / "activations.png", False,
               f"{args.model}: activations, residual vs plain ({when})")  # fmt: skip
    _plot_pair(gf, "grad_norm", "gradient norm of each convolution", out / "gradients.png", True,
               f"{args.model}: gradient norms, residual vs plain ({when})")  # fmt: skip
    feature_maps(models["residual"], batch[0][0].to(device), out / "feature_maps.png")
    ratios = {
        v: first_last_ratio([g for g in grads if g.variant == v]) for v in ("residual", "plain")
    }
    losses = {g.variant: g.batch_loss for g in grads}
    depth_rows = []
    for depth in args.depths:
        name = _depth_model(args.model, depth)
        _, dgrads, _ = analyse(name, device, batch, None, args.train_steps, args.seed, pool)
        for v in ("residual", "plain"):
            vg = [g for g in dgrads if g.variant == v]
            depth_rows.append({"depth": depth, "variant": v, "first_layer_grad_norm": vg[0].grad_norm,
                               "first_to_last_ratio": first_last_ratio(vg)})  # fmt: skip
    md = [
        f"# Layer statistics: {args.model}, residual vs plain ({when})",
        "",
        f"Batch of {args.batch_size} {'CIFAR-10 images' if args.data_dir else 'random normal images'}, "
        f"train-mode BatchNorm, one cross-entropy backward pass, seed {args.seed}, on {device}.",
        "",
        f"**First-layer / last-layer gradient norm: residual {ratios['residual']:.3g}, "
        f"plain {ratios['plain']:.3g}.** Loss on the measured batch: residual "
        f"{losses['residual']:.4g}, plain {losses['plain']:.4g}.",
        "",
        "## Activations after each block",
        "",
        wide_table(bf, "block", ["act_std", "act_zero_fraction"], ".4f"),
        "",
        "## Gradient norm per convolution",
        "",
        wide_table(gf, "layer", ["grad_norm", "grad_to_weight"], ".3g"),
        "",
        "![activations](activations.png) ![gradients](gradients.png) ![feature maps](feature_maps.png)",
        "",
    ]
    if depth_rows:
        df = pd.DataFrame(depth_rows)
        _depth_plot(df, out / "depth_gradients.png")
        md += ["## Across depths", "", df.to_markdown(index=False, floatfmt=".3g"), "",
               "![depth](depth_gradients.png)", ""]  # fmt: skip
        with (out / "layerstats.jsonl").open("a") as f:
            for row in depth_rows:
                f.write(json.dumps({"kind": "depth", **row}) + "\n")
    (out / "layerstats.md").write_text("\n".join(md))
    print(
        f"{args.model} ({when}): first/last-layer gradient norm ratio residual {ratios['residual']:.3g}, "
        f"plain {ratios['plain']:.3g}"
    )
    for row in depth_rows:
        print(f"  depth {row['depth']:>3} {row['variant']:<8} first-layer grad norm {row['first_layer_grad_norm']:.3g}, "
              f"first/last {row['first_to_last_ratio']:.3g}")  # fmt: skip
    print(
        f"wrote {out}/layerstats.md, layerstats.jsonl, activations.png, gradients.png, feature_maps.png"
    )
    return 0


def _depth_model(model: str, depth: int) -> str:
    return f"small_resnet{depth}" if model_family(model) == "cifar" else f"resnet{depth}"


def _depth_plot(df: pd.DataFrame, path: Path) -> None:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 4))
    for variant, part in df.groupby("variant", sort=False):
        ax.plot(part["depth"], part["first_layer_grad_norm"], marker="o", label=variant)
    ax.set_yscale("log")
    ax.set_xlabel("depth (layers)")
    ax.set_ylabel("first-layer gradient norm")
    ax.set_title("Gradient reaching the first layer, residual vs plain", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def build_parser() -> cli.Parser:
    p = cli.Parser(prog="python -m resbench.layerstats", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model", default="small_resnet56", help=cli.models_help("small_resnet56", many=False)
    )
    cli.add_device(p)
    p.add_argument("--batch-size", type=int, default=128, help="(default: %(default)s)")
    p.add_argument(
        "--checkpoint", type=Path, help="a trainer checkpoint.pt for the residual network"
    )
    p.add_argument(
        "--data-dir", type=Path, help="CIFAR-10 images instead of random ones (CIFAR models)"
    )
    p.add_argument("--no-verify", action="store_true", help="skip the md5 check of --data-dir")
    p.add_argument(
        "--depths", default="", help="CIFAR depths to compare, e.g. 20,56,110 (default: none)"
    )
    p.add_argument(
        "--train-steps", type=int, default=0, help="SGD steps before measuring (default: 0)"
    )
    p.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    p.add_argument(
        "--out", type=Path, help="output folder (default: results/layerstats-<timestamp>)"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    def body() -> int:
        args = build_parser().parse_args(argv)
        if args.model not in list_models():
            raise cli.UsageError(
                f"unknown model {args.model!r}; choose one of: {', '.join(list_models())}"
            )
        if args.batch_size < 2:
            raise cli.UsageError(
                f"--batch-size must be at least 2 (train-mode BatchNorm); got {args.batch_size}"
            )
        for name in ("batch_size", "train_steps", "seed"):
            cli.bounded(getattr(args, name), f"--{name.replace('_', '-')}")
        cli.not_empty(args.device, "--device")
        if args.checkpoint is not None and not args.checkpoint.is_file():
            raise cli.UsageError(f"--checkpoint {args.checkpoint} is not a file")
        args.depths = cli.parse_positive_ints(args.depths, "--depths") if args.depths else []
        family = model_family(args.model)
        for depth in args.depths:
            if _depth_model(args.model, depth) not in list_models():
                valid = [m.rsplit("resnet", 1)[1] for m in list_models(family)]
                raise cli.UsageError(
                    f"--depths: no model {_depth_model(args.model, depth)!r}; {family} depths are "
                    f"{', '.join(valid)}"
                )
        return run(args)

    return cli.run_cli("resbench.layerstats", body)


if __name__ == "__main__":
    sys.exit(main())
