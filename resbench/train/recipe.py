"""A training run on disk: its recipe, checkpoints, log and summary, and the folder's rules.

A folder that holds a run is continued (``--resume``, from a checkpoint of the same recipe) or
replaced (``--overwrite``), never silently overwritten. Checkpoints hold only tensors and plain data
(the RNG states too), so they load with ``weights_only=True`` and a crafted one cannot run code.
``train.jsonl`` is valid JSON: a non-finite number is written as null.
"""

from __future__ import annotations

import json
import math
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from resbench import cli, runfolder
from resbench.devices import parse_device
from resbench.measure import Config, validate_config
from resbench.models import list_models
from resbench.report import pyplot
from resbench.settings import COMPILE_MODES, PRECISIONS

CHECKPOINT = "checkpoint.pt"
LOG_FILE = "train.jsonl"
LOG_COLUMNS = ("epoch", "train_s", "cum_train_s", "train_loss", "train_acc", "test_loss", "test_acc",
               "lr", "images_per_s", "eval_s")  # fmt: skip
# the files that say a folder holds a training run
RUN_FILES = (CHECKPOINT, LOG_FILE, "summary.json")
# what a resumed run must share with its checkpoint (epochs may grow; device and loaders may change)
RECIPE = ("model", "batch_size", "lr", "momentum", "weight_decay", "milestones", "gamma", "precision",
          "channels_last", "seed", "data_loader", "pad_mode")  # fmt: skip


@dataclass
class TrainConfig:
    model: str = (
        "small_resnet18"  # the tutorial's network; He et al.'s small_resnet20..110 also fit
    )
    epochs: int = 30
    batch_size: int = 128  # global: under DDP each of N ranks takes batch_size / N per step
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    milestones: tuple[int, ...] = (15, 25)  # MultiStepLR: lr x gamma at these epochs
    gamma: float = 0.1
    precision: str = "fp32"
    channels_last: bool = False
    compile: str = "off"
    seed: int = 0
    deterministic: bool = False
    device: str = "cpu"
    data_loader: str = "device"  # or "torchvision": DataLoader + per-image transforms, the baseline
    workers: int = 2  # DataLoader workers for --data-loader torchvision
    eval_batch_size: int = 1000
    pad_mode: str = "reflect"  # 4-pixel padding before the random crop: reflect or constant (zeros)
    targets: tuple[float, ...] = (0.90, 0.94)
    # CPU only: denormal floats from real data cost ~15% per step on x86 (measured on small_resnet18)
    flush_denormal: bool = True


@dataclass
class RunState:
    """Everything a checkpoint needs besides the module states."""

    epoch: int = 0
    log: list[dict] = field(default_factory=list)
    compile_s: float = 0.0
    load_s: float = 0.0


def rng_state(gen: torch.Generator) -> dict:
    """Every RNG's state as tensors and plain data, so the checkpoint loads with weights_only."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "data": gen.get_state(), "python": random.getstate(),
             "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)}}  # fmt: skip
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    gen.set_state(state["data"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, **state) -> None:
    """Write atomically: a kill mid-write leaves the previous checkpoint intact."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _finite_or_none(row: dict) -> dict:
    """A NaN or infinity is not JSON: such a value is written as null (no number)."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}


def write_log(out: Path, log: list[dict]) -> None:
    text = "".join(json.dumps(_finite_or_none(row), allow_nan=False) + "\n" for row in log)
    runfolder.write_atomic(out / LOG_FILE, text)


def read_checkpoint(path: Path, cfg: TrainConfig, device=None) -> dict:
    """A checkpoint of this recipe, loaded safely (weights_only); a ValueError of one line if it is
    damaged, not a checkpoint, or of a run with other recipe settings."""
    ckpt = runfolder.load_checkpoint(path, map_location=device)
    missing = [k for k in ("model", "optimizer", "scheduler", "scaler", "rng", "state", "config")
               if k not in ckpt]  # fmt: skip
    if missing:
        raise ValueError(f"{path} is not a trainer checkpoint: it lacks {', '.join(missing)}")
    saved, now = ckpt["config"], asdict(cfg)
    differ = [
        f"{name} {plain(saved.get(name))} -> {plain(now[name])}"
        for name in RECIPE
        if plain(saved.get(name)) != plain(now[name])
    ]
    if differ:
        raise ValueError(
            f"--resume: {path} is of a run with other settings ({'; '.join(differ)}); resume with "
            "the run's own settings, or start a new run in another --out"
        )
    return ckpt


def plain(value):
    return list(value) if isinstance(value, tuple | list) else value


def check_folder(out: Path, run_dirs: list[Path], args, base: TrainConfig) -> None:
    """A folder that holds a run is continued (--resume) or replaced (--overwrite), never both
    silently; --resume needs a checkpoint of the same recipe."""
    if out.is_dir():
        runfolder.check_free(out)  # a run in progress is named as such, with its PID
    held = [d for d in run_dirs if runfolder.holds_run(d, RUN_FILES)]
    if held and not (args.resume or args.overwrite):
        raise cli.UsageError(
            f"{out} already holds a training run; continue it with --resume, replace it with "
            "--overwrite, or choose another --out"
        )
    if args.resume:
        first = run_dirs[0] / CHECKPOINT
        if not first.exists():
            raise cli.UsageError(
                f"--resume: {first} does not exist, so there is nothing to continue (start "
                "without --resume)"
            )
        for i, run_dir in enumerate(run_dirs):  # every checkpoint there is loads and matches
            if (run_dir / CHECKPOINT).exists():
                read_checkpoint(run_dir / CHECKPOINT, TrainConfig(**{**asdict(base),
                                "seed": base.seed + i}), "cpu")  # fmt: skip


def start_folder(out: Path, run_dirs: list[Path], args, base, command: str, env: dict) -> None:
    """Record this invocation; a new (or overwritten) run also gets its environment."""
    out.mkdir(parents=True, exist_ok=True)
    if not args.resume:
        for run_dir in run_dirs:
            for name in (*RUN_FILES, "train.csv"):
                (run_dir / name).unlink(missing_ok=True)
    if not args.resume or not (out / runfolder.ENV_FILE).exists():
        runfolder.write_atomic(out / runfolder.ENV_FILE, json.dumps(env, indent=2) + "\n")
    options = {k: plain(v) for k, v in asdict(base).items()} | {"runs": args.runs}
    runfolder.record_invocation(out, command, options, args.resume)


def summarise(cfg: TrainConfig, state: RunState) -> dict:
    reached = {}
    for target in cfg.targets:
        hit = next((r for r in state.log if r["test_acc"] >= target), None)
        reached[f"{target:.2f}"] = (
            None if hit is None else {"epoch": hit["epoch"], "train_s": hit["cum_train_s"]}
        )
    last = state.log[-1] if state.log else {}
    return {
        "final_test_acc": last.get("test_acc"),
        "best_test_acc": max((r["test_acc"] for r in state.log), default=None),
        "train_s": last.get("cum_train_s"),
        "epochs": state.epoch,
        "time_to_target": reached,
        "compile_s": state.compile_s,
        "data_to_device_s": state.load_s,
        "eval_s": sum(r["eval_s"] for r in state.log),
        "seed": cfg.seed,
    }


def mean_std(values: list[float]) -> str:
    if not values:
        return "not reached"
    if len(values) == 1:
        return f"{values[0]:.4g}"
    return f"{np.mean(values):.4g} ± {np.std(values, ddof=1):.2g}"


def accuracy_plot(runs: list[tuple[Path, dict]], cfg: TrainConfig, path: Path) -> None:
    """Test accuracy against training seconds per run, from 0 s, with the targets labelled."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for run_dir, s in runs:
        log = pd.read_csv(run_dir / "train.csv") if (run_dir / "train.csv").exists() else None
        if log is not None and len(log):
            ax.plot(log["cum_train_s"], log["test_acc"], marker=".", label=f"seed {s['seed']}")
    for target in cfg.targets:
        ax.axhline(target, ls="--", lw=0.8, color="grey")
        ax.annotate(f"target {target:.0%}", (0, target), xytext=(4, 2),
                    textcoords="offset points", fontsize=8, color="dimgrey")  # fmt: skip
    ax.set_xlim(left=0)
    ax.set_xlabel("training seconds (steps only)")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{cfg.model}, {cfg.precision}, batch {cfg.batch_size}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_summary(out: Path, cfg: TrainConfig, runs: list[tuple[Path, dict]], env: dict) -> None:
    """summary.md and accuracy_vs_time.png over one or more runs."""

    finals = [s["final_test_acc"] for _, s in runs]
    lines = [
        f"# Training {cfg.model} on CIFAR-10",
        "",
        f"- device: {cfg.device} ({', '.join(env.get('gpu_names') or []) or env.get('cpu')}); torch {env.get('torch')}",
        f"- command: `{env.get('command', '')}`",
        f"- recipe: batch {cfg.batch_size}, SGD lr {cfg.lr} momentum {cfg.momentum} wd {cfg.weight_decay}, "
        f"MultiStepLR {list(cfg.milestones)} x{cfg.gamma}, {cfg.epochs} epochs, {cfg.precision}, "
        f"channels_last {'on' if cfg.channels_last else 'off'}, compile {cfg.compile}, loader {cfg.data_loader}",
        f"- timed region: training steps only, synchronised at its edges (evaluation, data loading and compile "
        f"warm-up excluded: eval {np.mean([s['eval_s'] for _, s in runs]):.1f} s, "
        f"compile {np.mean([s['compile_s'] for _, s in runs]):.1f} s per run)",
        "",
        f"**{len(runs)} run(s)**: final test accuracy {mean_std(finals)}; "
        f"training time {mean_std([s['train_s'] for _, s in runs])} s.",
        "",
        "| target | runs reaching it | training seconds to reach it | epoch |",
        "|---|---|---|---|",
    ]
    for target in cfg.targets:
        key = f"{target:.2f}"
        hits = [s["time_to_target"][key] for _, s in runs if s["time_to_target"][key]]
        lines.append(
            f"| {target:.0%} | {len(hits)}/{len(runs)} | {mean_std([h['train_s'] for h in hits])} | "
            f"{mean_std([h['epoch'] for h in hits])} |"
        )
    accuracy_plot(runs, cfg, out / "accuracy_vs_time.png")
    lines += ["", "![accuracy vs time](accuracy_vs_time.png)", ""]
    (out / "summary.md").write_text("\n".join(lines))


# ----------------------------------------------------------------------------- flags


def build_parser() -> cli.Parser:
    d = TrainConfig()
    p = cli.Parser(
        prog="python -m resbench.train",
        description="Train on CIFAR-10; report accuracy versus time.",
    )
    p.add_argument(
        "--model",
        default=d.model,
        help=f"a CIFAR-family model: {', '.join(list_models('cifar'))} (default: %(default)s)",
    )
    cli.add_device(p)
    cli.add_setting_flags(p, many=False)
    p.add_argument("--epochs", type=int, default=d.epochs, help="(default: %(default)s)")
    p.add_argument(
        "--batch-size", type=int, default=d.batch_size, help="global batch (default: %(default)s)"
    )
    p.add_argument("--lr", type=float, default=d.lr, help="(default: %(default)s)")
    p.add_argument("--momentum", type=float, default=d.momentum, help="(default: %(default)s)")
    p.add_argument(
        "--weight-decay", type=float, default=d.weight_decay, help="(default: %(default)s)"
    )
    p.add_argument(
        "--milestones",
        default="15,25",
        help='epochs where lr drops; "" for none (default: %(default)s)',
    )
    p.add_argument(
        "--gamma",
        type=float,
        default=d.gamma,
        help="lr factor at milestones (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=d.seed, help="(default: %(default)s)")
    p.add_argument(
        "--runs",
        type=int,
        default=1,
        help="seeds seed..seed+N-1 back to back (default: %(default)s)",
    )
    p.add_argument(
        "--target-acc",
        type=float,
        action="append",
        help="report time to this test accuracy; repeatable (default: 0.90 and 0.94)",
    )
    p.add_argument("--deterministic", action="store_true", help="deterministic kernels (slower)")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path("data"),
        help="folder holding cifar-10-batches-py/ (default: %(default)s)",
    )
    p.add_argument(
        "--download", action="store_true", help="fetch CIFAR-10 into --data-dir if absent"
    )
    p.add_argument(
        "--no-verify", action="store_true", help="skip the md5 check (for data you made yourself)"
    )
    p.add_argument(
        "--data-loader",
        choices=["device", "torchvision"],
        default="device",
        help="(default: %(default)s)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=d.workers,
        help="DataLoader workers for --data-loader torchvision (default: %(default)s)",
    )
    p.add_argument(
        "--keep-denormals",
        action="store_true",
        help="on CPUs, keep denormal floats (slower); by default they are flushed to zero",
    )
    p.add_argument(
        "--pad-mode",
        choices=["reflect", "constant"],
        default=d.pad_mode,
        help="crop padding (default: %(default)s)",
    )
    p.add_argument("--out", type=Path, help="run folder (default: results/train-<timestamp>)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run(s) in --out from their checkpoints (same recipe; more epochs allowed)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run that --out holds (without it, such a folder is refused)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def config_from_args(args) -> TrainConfig:
    if args.model not in list_models("cifar"):
        raise cli.UsageError(
            f"--model must be a CIFAR-family model; choose one of: {', '.join(list_models('cifar'))}"
        )
    for name in ("epochs", "batch_size", "runs", "seed", "workers"):
        cli.bounded(getattr(args, name), f"--{name.replace('_', '-')}")
    cli.positive(args.lr, "--lr")
    cli.positive(args.gamma, "--gamma")
    cli.at_least(args.weight_decay, "--weight-decay", 0)
    cli.in_range(args.momentum, "--momentum", 0, 1)
    cli.not_empty(args.device, "--device")
    milestones = (
        tuple(cli.parse_positive_ints(args.milestones, "--milestones")) if args.milestones else ()
    )
    targets = tuple(args.target_acc or TrainConfig.targets)
    if any(not 0 < t <= 1 for t in targets):  # NaN fails this too
        raise cli.UsageError("--target-acc takes accuracies in (0, 1], e.g. 0.93")
    if args.precision not in PRECISIONS or args.compile not in COMPILE_MODES:
        raise cli.UsageError(
            f"unknown --precision or --compile; choose from {PRECISIONS} and {COMPILE_MODES}"
        )
    channels_last = cli.parse_on_off(args.channels_last, "--channels-last")[0]
    parse_device(args.device)
    # the same device/precision rules as every measurement (fp16 needs a GPU, tf32 needs CUDA)
    validate_config(Config(args.model, args.batch_size, device=args.device, precision=args.precision,
                           channels_last=channels_last, compile=args.compile))  # fmt: skip
    return TrainConfig(
        model=args.model, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
        weight_decay=args.weight_decay, milestones=milestones, gamma=args.gamma, precision=args.precision,
        channels_last=channels_last, compile=args.compile, seed=args.seed, deterministic=args.deterministic,
        device=args.device, data_loader=args.data_loader, workers=args.workers, pad_mode=args.pad_mode,
        targets=targets, flush_denormal=not args.keep_denormals,
    )  # fmt: skip
