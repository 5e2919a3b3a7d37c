"""`python -m resbench.layerstats`: why residuals work, measured on a network and its twin.

For a registry model (freshly initialised, or from a trainer checkpoint) and the same network built
another way (``--compare``): without skip connections (``residual,plain``, the default), or with its
blocks in the original and the pre-activated order (``original,preact``, He et al. 2016): activation
mean, std and fraction of zeros after each block (for pre-activated blocks, the identity path
itself); the gradient norm of every convolution (and relative to its weight norm) after one backward
pass; plots with both networks on the same axes; and feature maps. Usage::

    python -m resbench.layerstats --model small_resnet56 --device cpu --out results/layerstats
    python -m resbench.layerstats --model small_resnet20 --depths 20,56,110 --train-steps 50
    python -m resbench.layerstats --model preact_resnet110 --compare original,preact --depths 20,164

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

from resbench import cli, data, weights
from resbench.engine.devices import parse_device
from resbench.layerstats import plots
from resbench.models import build_model, default_image_size, list_models, model_family
from resbench.models.registry import spec

# how each variant is built from the registry entry (build_model's overrides)
VARIANTS = {"residual": {"residual": True}, "plain": {"residual": False},
            "original": {"preact": False}, "preact": {"preact": True}}  # fmt: skip


@dataclass
class BlockStats:
    model: str
    variant: str  # a VARIANTS name: "residual", "plain", "original" or "preact"
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
        cifar = data.load("cifar10", data_dir, check=verify)
        index = torch.randperm(len(cifar.train_x), generator=gen)[:batch_size]
        return data.normalize(cifar.train_x[index], cifar.mean, cifar.std), cifar.train_y[index]
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


def is_entry(name: str, variant: str) -> bool:
    """Whether ``variant`` of ``name`` is the registry's network itself (a checkpoint's)."""
    own = {"residual": True, "preact": spec(name).preact}
    return all(own[k] == v for k, v in VARIANTS[variant].items())


def load_checkpoint(model: nn.Module, name: str, checkpoint: Path) -> None:
    """A trainer checkpoint (or a bare state dict) into ``model``, read safely (``weights``); a
    ValueError of one line when it is damaged, unsafe, or of another network."""
    try:
        w = weights.read(checkpoint)
        if w.model not in (None, name):
            raise ValueError(f"{checkpoint} holds {w.model}, not {name}; pass --model {w.model}")
        weights.load_into(model, w)
    except ValueError as exc:
        raise ValueError(f"--checkpoint {exc}") from None


def analyse(
    name: str,
    device: torch.device,
    batch,
    checkpoint: Path | None = None,
    train_steps: int = 0,
    seed: int = 0,
    train_pool=None,
    variants: Sequence[str] = ("residual", "plain"),
):
    """Stats of the network in each variant; returns (block rows, grad rows, models).

    With ``train_steps``, each network first takes that many SGD steps on ``train_pool``; a
    ``checkpoint`` loads into the variant that is the registry's network itself.
    """
    x, y = (t.to(device) for t in batch)
    blocks, grads, models = [], [], {}
    for variant in variants:
        torch.manual_seed(seed)  # the same initial weights for both where their shapes agree
        model = build_model(name, **VARIANTS[variant]).to(device)
        if checkpoint is not None and is_entry(name, variant):
            load_checkpoint(model, name, checkpoint)
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
    variants = args.compare
    pair = " vs ".join(variants)
    blocks, grads, models = analyse(
        args.model, device, batch, args.checkpoint, args.train_steps, args.seed, pool, variants
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
    plots.plot_pair(bf, "act_std", "activation std after each block", out / "activations.png", False,
               f"{args.model}: activations, {pair} ({when})")  # fmt: skip
    plots.plot_pair(gf, "grad_norm", "gradient norm of each convolution", out / "gradients.png", True,
               f"{args.model}: gradient norms, {pair} ({when})")  # fmt: skip
    shown = next((v for v in variants if is_entry(args.model, v)), variants[0])
    plots.feature_maps(models[shown], batch[0][0].to(device), out / "feature_maps.png")
    ratios = {v: first_last_ratio([g for g in grads if g.variant == v]) for v in variants}
    losses = {g.variant: g.batch_loss for g in grads}
    depth_rows = []
    for depth in args.depths:
        name = _depth_model(args.model, depth)
        dblocks, dgrads, _ = analyse(
            name, device, batch, None, args.train_steps, args.seed, pool, variants
        )
        for v in variants:
            vg = [g for g in dgrads if g.variant == v]
            vb = [b for b in dblocks if b.variant == v]
            depth_rows.append({"depth": depth, "model": name, "variant": v,
                               "first_layer_grad_norm": vg[0].grad_norm,
                               "first_to_last_ratio": first_last_ratio(vg),
                               "first_block_act_std": vb[0].act_std,
                               "last_block_act_std": vb[-1].act_std})  # fmt: skip
    md = [
        f"# Layer statistics: {args.model}, {pair} ({when})",
        "",
        f"Batch of {args.batch_size} {'CIFAR-10 images' if args.data_dir else 'random normal images'}, "
        f"train-mode BatchNorm, one cross-entropy backward pass, seed {args.seed}, on {device}.",
        "",
        "**First-layer / last-layer gradient norm: "
        + ", ".join(f"{v} {ratios[v]:.3g}" for v in variants)
        + ".** Loss on the measured batch: "
        + ", ".join(f"{v} {losses[v]:.4g}" for v in variants)
        + ".",
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
        plots.depth_plot(df, out / "depth_gradients.png", pair)
        md += ["## Across depths", "", df.to_markdown(index=False, floatfmt=".3g"), "",
               "![depth](depth_gradients.png)", ""]  # fmt: skip
        with (out / "layerstats.jsonl").open("a") as f:
            for row in depth_rows:
                f.write(json.dumps({"kind": "depth", **row}) + "\n")
    (out / "layerstats.md").write_text("\n".join(md))
    print(f"{args.model} ({when}): first/last-layer gradient norm ratio "
          + ", ".join(f"{v} {ratios[v]:.3g}" for v in variants))  # fmt: skip
    for row in depth_rows:
        print(f"  depth {row['depth']:>4} {row['variant']:<8} first-layer grad norm "
              f"{row['first_layer_grad_norm']:.3g}, first/last {row['first_to_last_ratio']:.3g}, "
              f"last block act std {row['last_block_act_std']:.3g}")  # fmt: skip
    print(
        f"wrote {out}/layerstats.md, layerstats.jsonl, activations.png, gradients.png, feature_maps.png"
    )
    return 0


def _depth_prefix(model: str) -> str:
    """The name a depth completes: "preact_resnet" for preact_resnet110, "resnet" for resnet18d."""
    prefix = model.rstrip("0123456789")
    if prefix != model:
        return prefix
    return "small_resnet" if model_family(model) == "cifar" else "resnet"


def _depth_model(model: str, depth: int) -> str:
    return f"{_depth_prefix(model)}{depth}"


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
        "--depths",
        default="",
        help="depths of the same family to compare, e.g. 20,56,110 (default: none)",
    )
    p.add_argument(
        "--compare",
        default="residual,plain",
        help=f"the two variants to compare, of: {', '.join(VARIANTS)} (residual,plain: with and "
        "without skip connections; original,preact: the two block orders) (default: %(default)s)",
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
        args.compare = cli.parse_choices(args.compare, "--compare", tuple(VARIANTS))
        if len(args.compare) != 2:
            raise cli.UsageError(f"--compare takes two variants; got {','.join(args.compare)}")
        if args.checkpoint is not None and not any(is_entry(args.model, v) for v in args.compare):
            raise cli.UsageError(
                f"--checkpoint loads into {args.model} itself, which --compare "
                f"{','.join(args.compare)} leaves out"
            )
        args.depths = cli.parse_positive_ints(args.depths, "--depths") if args.depths else []
        prefix, family = _depth_prefix(args.model), model_family(args.model)
        same = list_models(family)  # one batch of images serves every depth
        for depth in args.depths:
            if _depth_model(args.model, depth) not in same:
                valid = [m[len(prefix) :] for m in same if m.startswith(prefix)]
                raise cli.UsageError(
                    f"--depths: no model {_depth_model(args.model, depth)!r}; {family} depths of "
                    f"{prefix} are {', '.join(d for d in valid if d.isdigit())}"
                )
        return run(args)

    return cli.run_cli("resbench.layerstats", body)


if __name__ == "__main__":
    sys.exit(main())
