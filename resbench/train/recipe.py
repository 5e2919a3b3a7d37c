"""A training run on disk: its recipe, checkpoints, log and summary.

Checkpoints hold only tensors and plain data (the RNG states too), so they load with
``weights_only=True`` and a crafted one cannot run code; they are written whole or not at all.
``train.jsonl`` is valid JSON: a non-finite number is written as null. The flags are in ``flags.py``,
the folder's rules (resume, overwrite, stopping) in ``folder.py``.
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
from resbench.data import DATASETS
from resbench.report import pyplot

CHECKPOINT = "checkpoint.pt"
LOG_FILE = "train.jsonl"
LOG_COLUMNS = ("epoch", "train_s", "cum_train_s", "train_loss", "train_acc", "test_loss", "test_acc",
               "lr", "images_per_s", "eval_s")  # fmt: skip
# the files that say a folder holds a training run
RUN_FILES = (CHECKPOINT, LOG_FILE, "summary.json")
# what a resumed run must share with its checkpoint (epochs may grow; device and loaders may change)
RECIPE = ("dataset", "model", "batch_size", "lr", "momentum", "weight_decay", "milestones", "gamma",
          "precision", "channels_last", "seed", "data_loader", "pad_mode")  # fmt: skip


@dataclass
class TrainConfig:
    dataset: str = "cifar10"  # or "fashion-mnist", "mnist": a data.DATASETS key with a train split
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
    # where the data is read (--data-dir), absolute: run.json keeps it, so --resume needs only --out
    data_dir: str = "data"


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
    """Write atomically: a kill mid-write (or a crash before the disk has it) leaves the previous
    checkpoint intact."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def epoch_line(row: dict, epochs: int) -> str:
    """An epoch's log row as the line printed when it ends: "epoch 3/30  12.34 s  loss 0.512
    train 0.823  test 0.8011  lr 0.1  5123 img/s" (the seconds: its timed training steps)."""
    return (
        f"epoch {row['epoch']:{len(str(epochs))}d}/{epochs}  {row['train_s']:7.2f} s  "
        f"loss {row['train_loss']:.3f}  train {row['train_acc']:.3f}  test {row['test_acc']:.4f}  "
        f"lr {row['lr']:.3g}  {row['images_per_s']:.0f} img/s"
    )


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
    saved = ckpt["config"] if isinstance(ckpt["config"], dict) else {}
    # a setting a checkpoint lacks was written before it existed, by a trainer that used the default
    defaults = asdict(TrainConfig())
    differ = recipe_differences({k: saved.get(k, defaults[k]) for k in RECIPE}, asdict(cfg))
    if differ:
        raise ValueError(
            f"--resume: {path} is of a run with other settings ({'; '.join(differ)}); resume with "
            "the run's own settings, or start a new run with --overwrite or another --out"
        )
    return ckpt


def plain(value):
    return list(value) if isinstance(value, tuple | list) else value


def flag_of(name: str) -> tuple[str, str]:
    """A TrainConfig field's flag and its argparse dest: "batch_size" -> ("--batch-size", ...)."""
    dest = {"targets": "target_acc", "flush_denormal": "keep_denormals"}.get(name, name)
    return "--" + dest.replace("_", "-"), dest


def _shown(name: str, value) -> str:
    """A recipe value as its flag takes it: milestones "15,25", channels_last "on"."""
    if name == "channels_last":
        return "on" if value else "off"
    if isinstance(value, tuple | list):
        return ",".join(map(str, value)) or '""'
    return str(value)


def recipe_differences(saved: dict, now: dict) -> list[str]:
    """ "--lr 0.2 (recorded: 0.1)" for each recipe setting in both whose value differs."""
    return [
        f"{flag_of(name)[0]} {_shown(name, now[name])} (recorded: {_shown(name, saved[name])})"
        for name in saved
        if name in now and plain(saved[name]) != plain(now[name])
    ]


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
        "dataset": cfg.dataset,
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
    title = DATASETS[cfg.dataset].title
    ax.set_title(f"{cfg.model} on {title}, {cfg.precision}, batch {cfg.batch_size}", fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # beside the axes: a legend inside covers some curve
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


def write_summary(out: Path, cfg: TrainConfig, runs: list[tuple[Path, dict]], env: dict) -> None:
    """summary.md and accuracy_vs_time.png over one or more runs: the epochs each run trained."""

    finals = [s["final_test_acc"] for _, s in runs]
    counts = list(dict.fromkeys(s["epochs"] for _, s in runs))  # runs may stop at other epochs
    epochs = (
        cli.plural(counts[0], "epoch")
        if len(counts) == 1
        else f"{'/'.join(map(str, counts))} epochs"
    )
    lines = [
        f"# Training {cfg.model} on {DATASETS[cfg.dataset].title}",
        "",
        f"- device: {cfg.device} ({', '.join(env.get('gpu_names') or []) or env.get('cpu')}); torch {env.get('torch')}",
        f"- command: `{env.get('command', '')}`",
        f"- recipe: batch {cfg.batch_size}, SGD lr {cfg.lr} momentum {cfg.momentum} wd {cfg.weight_decay}, "
        f"MultiStepLR {list(cfg.milestones)} x{cfg.gamma}, {epochs}, {cfg.precision}, "
        f"channels_last {'on' if cfg.channels_last else 'off'}, compile {cfg.compile}, loader {cfg.data_loader}",
        f"- timed region: training steps only, synchronised at its edges (evaluation, data loading and compile "
        f"warm-up excluded: eval {np.mean([s['eval_s'] for _, s in runs]):.1f} s, "
        f"compile {np.mean([s['compile_s'] for _, s in runs]):.1f} s per run)",
        "",
        f"**{cli.plural(len(runs), 'run')}**: final test accuracy {mean_std(finals)}; "
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
    runfolder.write_atomic(out / "summary.md", "\n".join(lines))
