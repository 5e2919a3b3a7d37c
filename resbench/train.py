"""`python -m resbench.train`: train a CIFAR-family ResNet on CIFAR-10, accuracy versus time.

The recipe this project started from: small_resnet18, batch 128, SGD lr 0.1 (momentum 0.9, weight decay
5e-4), MultiStepLR at epochs 15 and 25 (gamma 0.1), 30 epochs, cross-entropy. The timed region is the
training steps only, synchronised at its edges: the download, the one-off data load, compile warm-up
and evaluation are excluded and reported separately. Usage::

    python -m resbench.train --data-dir data --download                      # the recipe
    python -m resbench.train --model small_resnet20 --precision bf16 --runs 3 --target-acc 0.9
    torchrun --nproc-per-node 2 -m resbench.train --device cuda ...           # DDP
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import random
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from resbench import cli, data
from resbench.env import collect_env
from resbench.measure import (
    COMPILE_MODES,
    PRECISIONS,
    Config,
    autocast,
    numerics,
    parse_device,
    validate_config,
)
from resbench.models import build_model, list_models
from resbench.report import pyplot
from resbench.timing import synchronize

CHECKPOINT = "checkpoint.pt"


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


class NonFiniteLoss(RuntimeError):
    pass


def _dist():
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = (
            "nccl"
            if torch.cuda.is_available() and os.environ.get("RESBENCH_BACKEND") != "gloo"
            else "gloo"
        )
        dist.init_process_group(backend)
    return dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0"))


def _all_reduce(values: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(values)
    return values


def _rng_state(gen: torch.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "data": gen.get_state(), "python": random.getstate(),
             "numpy": np.random.get_state()}  # fmt: skip
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    gen.set_state(state["data"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, **state) -> None:
    """Write atomically: a kill mid-write leaves the previous checkpoint intact."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def train_run(
    cfg: TrainConfig, cifar: data.Cifar, out: Path, resume: bool = False, progress: bool = True
) -> dict:
    """One training run into ``out``; returns its summary (final accuracy, time to each target)."""
    rank, world, local_rank = _dist()
    device = torch.device(cfg.device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if cfg.batch_size % world:
        raise ValueError(f"--batch-size {cfg.batch_size} must divide evenly over {world} ranks")
    with _numerics(cfg, device):
        return _train(cfg, cifar, out, resume, progress, rank, world, device)


@contextlib.contextmanager
def _numerics(cfg: TrainConfig, device: torch.device):
    """The measurement's numerics (TF32, cuDNN autotuning, determinism) plus denormal flushing."""
    with numerics(cfg.precision, device, cfg.deterministic):
        flush = cfg.flush_denormal and device.type == "cpu" and torch.set_flush_denormal(True)
        try:
            yield
        finally:
            if flush:  # PyTorch has no getter; False is its default
                torch.set_flush_denormal(False)


def _write_log(out: Path, log: list[dict]) -> None:
    tmp = out / "train.jsonl.tmp"
    tmp.write_text("".join(json.dumps(row) + "\n" for row in log))
    os.replace(tmp, out / "train.jsonl")


def _train(cfg, cifar, out, resume, progress, rank, world, device) -> dict:
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)

    t0 = time.perf_counter()
    on_device = cifar.to(device)
    synchronize(device)
    state = RunState(load_s=time.perf_counter() - t0)

    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = build_model(cfg.model).to(device=device, memory_format=memory_format)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(cfg.milestones), cfg.gamma)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    net: torch.nn.Module = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    runner = (
        torch.compile(net, mode=None if cfg.compile == "default" else cfg.compile)
        if cfg.compile != "off"
        else net
    )

    def amp():
        return autocast(device, cfg.precision)

    ckpt_path = out / CHECKPOINT
    if resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        _set_rng_state(ckpt["rng"], gen)
        state = RunState(**ckpt["state"])
        if rank == 0:
            print(f"resumed {out} at epoch {state.epoch}", file=sys.stderr)

    if cfg.data_loader == "device":
        train_loader = data.DeviceLoader(
            on_device.train_x,
            on_device.train_y,
            cfg.batch_size,
            gen,
            True,
            cfg.pad_mode,
            rank,
            world,
            cfg.channels_last,
        )
        test_loader = data.DeviceLoader(
            on_device.test_x, on_device.test_y, cfg.eval_batch_size, gen, False, rank=rank, world=world,
            channels_last=cfg.channels_last,
        )  # fmt: skip
    else:
        train_loader = data.torchvision_loader(cifar.train_x, cifar.train_y, cfg.batch_size // world, True,
                                               cfg.workers, cfg.seed + state.epoch)  # fmt: skip
        test_loader = data.torchvision_loader(
            cifar.test_x, cifar.test_y, cfg.eval_batch_size, False, cfg.workers, 0
        )

    if cfg.compile != "off" and state.compile_s == 0.0:
        state.compile_s = _compile_warmup(model, runner, on_device, cfg, device, amp)

    def evaluate() -> tuple[float, float]:
        model.eval()
        sums = torch.zeros(3, device=device, dtype=torch.float64)
        with torch.inference_mode(), amp():
            for x, y in test_loader:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                logits = runner(x).float()
                sums += torch.stack([F.cross_entropy(logits, y, reduction="sum").double(),
                                     (logits.argmax(1) == y).sum().double(), torch.tensor(len(y), device=device,
                                                                                          dtype=torch.float64)])  # fmt: skip
        _all_reduce(sums, world)
        model.train()
        return (sums[0] / sums[2]).item(), (sums[1] / sums[2]).item()

    steps = len(train_loader)
    cum = state.log[-1]["cum_train_s"] if state.log else 0.0
    for epoch in range(state.epoch + 1, cfg.epochs + 1):
        model.train()
        lr = optimizer.param_groups[0]["lr"]
        losses = torch.zeros(steps, device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        bar = tqdm(total=steps, desc=f"epoch {epoch}/{cfg.epochs}", disable=not progress or rank != 0,
                   leave=False, dynamic_ncols=True)  # fmt: skip
        synchronize(device)
        start = time.perf_counter()
        for i, (x, y) in enumerate(train_loader):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with amp():
                logits = runner(x)
                loss = F.cross_entropy(logits, y)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            losses[i] = loss.detach()  # no host sync per step: inspected at the epoch's end
            correct += (logits.argmax(1) == y).sum()
            seen += len(y)
            bar.update()
        synchronize(device)
        train_s = time.perf_counter() - start
        bar.close()
        bad = (~torch.isfinite(losses)).nonzero()
        if len(bad):
            step = int(bad[0]) + 1
            raise NonFiniteLoss(
                f"non-finite loss at epoch {epoch}, step {step} of {steps} (lr {lr:g}); training stopped. "
                f"The last good checkpoint (epoch {state.epoch}) is kept at {ckpt_path}"
            )
        scheduler.step()
        totals = torch.stack(
            [losses.sum(), correct.float(), torch.tensor(float(seen), device=device)]
        )
        totals = _all_reduce(totals.double(), world)
        e0 = time.perf_counter()
        test_loss, test_acc = evaluate()
        eval_s = time.perf_counter() - e0
        cum += train_s
        row = {
            "epoch": epoch,
            "train_s": train_s,
            "cum_train_s": cum,
            "train_loss": (totals[0] / (steps * world)).item(),
            "train_acc": (totals[1] / totals[2]).item(),
            "test_loss": test_loss,
            "test_acc": test_acc,
            "lr": lr,
            "images_per_s": steps * cfg.batch_size / train_s,
            "eval_s": eval_s,
        }
        state.log.append(row)
        state.epoch = epoch
        if rank == 0:
            _write_log(out, state.log)
            save_checkpoint(
                ckpt_path, model=model.state_dict(), optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                scaler=scaler.state_dict(), rng=_rng_state(gen), state=asdict(state), config=asdict(cfg),
            )  # fmt: skip
            if progress:
                tqdm.write(
                    f"epoch {epoch:3d}  {train_s:7.2f} s  loss {row['train_loss']:.3f}  train {row['train_acc']:.3f}  "
                    f"test {test_acc:.4f}  lr {lr:.3g}  {row['images_per_s']:.0f} img/s"
                )
    summary = summarise(cfg, state)
    if rank == 0:
        pd.DataFrame(state.log).to_csv(out / "train.csv", index=False)
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _compile_warmup(model, runner, cifar, cfg, device, amp) -> float:
    """Compile the train and eval graphs on real batches, then restore the weights and BN statistics."""
    snapshot = copy.deepcopy(model.state_dict())
    x = data.normalize(cifar.train_x[: cfg.batch_size]).contiguous(
        memory_format=torch.channels_last if cfg.channels_last else torch.contiguous_format
    )
    y = cifar.train_y[: cfg.batch_size]
    start = time.perf_counter()
    for _ in range(2):
        with amp():
            F.cross_entropy(runner(x), y).backward()
    model.eval()
    with torch.inference_mode(), amp():
        runner(x)
    model.train()
    synchronize(device)
    took = time.perf_counter() - start
    model.load_state_dict(snapshot)
    model.zero_grad(set_to_none=True)
    return took


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


def _mean_std(values: list[float]) -> str:
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
        f"**{len(runs)} run(s)**: final test accuracy {_mean_std(finals)}; "
        f"training time {_mean_std([s['train_s'] for _, s in runs])} s.",
        "",
        "| target | runs reaching it | training seconds to reach it | epoch |",
        "|---|---|---|---|",
    ]
    for target in cfg.targets:
        key = f"{target:.2f}"
        hits = [s["time_to_target"][key] for _, s in runs if s["time_to_target"][key]]
        lines.append(
            f"| {target:.0%} | {len(hits)}/{len(runs)} | {_mean_std([h['train_s'] for h in hits])} | "
            f"{_mean_std([h['epoch'] for h in hits])} |"
        )
    accuracy_plot(runs, cfg, out / "accuracy_vs_time.png")
    lines += ["", "![accuracy vs time](accuracy_vs_time.png)", ""]
    (out / "summary.md").write_text("\n".join(lines))


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
        "--milestones", default="15,25", help="epochs where lr drops (default: %(default)s)"
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
        "--resume", action="store_true", help="continue the run(s) in --out from their checkpoints"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def config_from_args(args) -> TrainConfig:
    if args.model not in list_models("cifar"):
        raise cli.UsageError(
            f"--model must be a CIFAR-family model; choose one of: {', '.join(list_models('cifar'))}"
        )
    for flag in ("epochs", "batch_size", "runs"):
        if getattr(args, flag) < 1:
            raise cli.UsageError(
                f"--{flag.replace('_', '-')} must be at least 1; got {getattr(args, flag)}"
            )
    if args.lr <= 0:
        raise cli.UsageError(f"--lr must be positive; got {args.lr}")
    milestones = (
        tuple(cli.parse_positive_ints(args.milestones, "--milestones")) if args.milestones else ()
    )
    targets = tuple(args.target_acc or TrainConfig.targets)
    if any(not 0 < t <= 1 for t in targets):
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


def main(argv: Sequence[str] | None = None) -> int:
    def body() -> int:
        args = build_parser().parse_args(argv)
        base = config_from_args(args)
        if args.resume and args.out is None:
            raise cli.UsageError("--resume needs --out RUN_FOLDER (the run to continue)")
        rank, world, _ = _dist()
        if world > 1 and base.data_loader != "device":
            raise cli.UsageError(
                "under torchrun use --data-loader device (it gives each rank its slice)"
            )
        out = args.out or Path("results") / f"train-{cli.timestamp()}"
        if world > 1:
            import torch.distributed as dist

            box = [str(out)]
            dist.broadcast_object_list(box, src=0)
            out = Path(box[0])
        if rank == 0:
            cifar = data.load(
                args.data_dir, download_if_missing=args.download, check=not args.no_verify
            )
        if world > 1:
            dist.barrier()  # rank 0 downloaded and cached; the others read the cache
        if rank != 0:
            cifar = data.load(args.data_dir, check=not args.no_verify)
        out.mkdir(parents=True, exist_ok=True)
        argv_text = shlex.join(sys.argv[1:] if argv is None else list(argv))
        env = collect_env() | {
            "command": f"python -m resbench.train {argv_text}",
            "world_size": world,
        }
        if rank == 0:
            (out / "env.json").write_text(json.dumps(env, indent=2) + "\n")
        runs = []
        try:
            for i in range(args.runs):
                cfg = TrainConfig(**{**asdict(base), "seed": base.seed + i})
                run_dir = out if args.runs == 1 else out / f"seed{cfg.seed}"
                run_dir.mkdir(parents=True, exist_ok=True)
                if rank == 0 and not args.resume:
                    (run_dir / CHECKPOINT).unlink(missing_ok=True)
                runs.append(
                    (run_dir, train_run(cfg, cifar, run_dir, args.resume, not args.no_progress))
                )
        except NonFiniteLoss as exc:
            print(f"resbench.train: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(
                f"\ninterrupted; resume with: python -m resbench.train {argv_text} --resume --out {out}",
                file=sys.stderr,
            )
            return 130
        if rank == 0:
            write_summary(out, base, runs, env)
            finals = [s["final_test_acc"] for _, s in runs]
            print(
                f"final test accuracy {_mean_std(finals)} over {len(runs)} run(s); wrote {out / 'summary.md'}"
            )
        if world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()
        return 0

    return cli.run_cli("resbench.train", body)


if __name__ == "__main__":
    sys.exit(main())
