"""`python -m resbench.train`: train a CIFAR-family ResNet on CIFAR-10, Fashion-MNIST or MNIST.

The recipe this project started from: small_resnet18, batch 128, SGD lr 0.1 (momentum 0.9, weight decay
5e-4), MultiStepLR at epochs 15 and 25 (gamma 0.1), 30 epochs, cross-entropy. The timed region is the
training steps only, synchronised at its edges: the download, the one-off data load, compile warm-up
and evaluation are excluded and reported separately. The model takes the data's own channels and
classes; 28x28 images are zero padded to 32 once, in pixel space, as the checkpoint's ``data``
record says (``data.Preprocess``), so a scorer feeds the model exactly what training fed it. Usage::

    python -m resbench.train --data-dir data --download                      # the recipe
    python -m resbench.train --dataset fashion-mnist --data-dir /usr/share/datasets/fashion-mnist
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
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from resbench import cli, data, runfolder
from resbench.engine.backends import TrainStep
from resbench.engine.timing import synchronize
from resbench.env import collect_env
from resbench.models import build_model
from resbench.settings import PRECISIONS, autocast, numerics
from resbench.train import flags, folder, inputs, recipe
from resbench.train.flags import build_parser, config_from_args
from resbench.train.recipe import (
    CHECKPOINT,
    LOG_COLUMNS,
    RunState,
    TrainConfig,
)


class NonFiniteLoss(RuntimeError):
    pass


STOP = folder.Stop()  # Ctrl-C and SIGTERM wait for a checkpoint being written (installed by main)


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


def train_run(
    cfg: TrainConfig, ds: data.Tensors, out: Path, resume: bool = False, progress: bool = True
) -> dict:
    """One training run on ``ds`` (as ``data.load`` gives it) into ``out``; returns its summary
    (final accuracy, time to each target)."""
    rank, world, local_rank = _dist()
    device = torch.device(cfg.device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if cfg.batch_size % world:
        raise ValueError(f"--batch-size {cfg.batch_size} must divide evenly over {world} ranks")
    with _numerics(cfg, device):
        return _train(cfg, ds, out, resume, progress, rank, world, device)


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


@dataclass
class _Trainer:
    """The pieces of one run: the network and its runner, the optimiser, the data, the RNGs."""

    cfg: TrainConfig
    device: torch.device
    rank: int
    world: int
    model: torch.nn.Module
    runner: torch.nn.Module  # the model, wrapped in DDP and torch.compile as asked
    step: TrainStep  # the train step measure() times too: its optimiser and loss scaler
    scheduler: torch.optim.lr_scheduler.LRScheduler
    gen: torch.Generator
    on_device: data.Tensors  # the training data, padded to the model's side, on the device
    preprocess: data.Preprocess  # raw images -> the model's input, as the checkpoint records it
    state: RunState

    def amp(self):
        return autocast(self.device, self.cfg.precision)

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.step.optimizer

    @property
    def scaler(self) -> torch.amp.GradScaler:
        return self.step.scaler


def _train(cfg, ds, out, resume, progress, rank, world, device) -> dict:
    t = _build(cfg, ds, device, rank, world)
    ckpt_path = out / CHECKPOINT
    if resume and ckpt_path.exists():
        _restore(t, ckpt_path)
        if rank == 0:
            with STOP.writing():  # the log as the checkpoint has it (a kill may have cut it)
                recipe.write_log(out, t.state.log)
            print(f"resumed {out} at epoch {t.state.epoch}", file=sys.stderr)
    train_loader, test_loader = inputs.loaders(cfg, t.on_device, t.preprocess, t.gen, t.rank,
                                               t.world, t.state.epoch)  # fmt: skip
    if cfg.compile != "off" and t.state.compile_s == 0.0:
        t.state.compile_s = _compile_warmup(t, device)
    for epoch in range(t.state.epoch + 1, cfg.epochs + 1):
        row = _train_epoch(t, train_loader, epoch, progress, ckpt_path)
        e0 = time.perf_counter()
        row["test_loss"], row["test_acc"] = _evaluate(t, test_loader)
        row["eval_s"] = time.perf_counter() - e0
        t.state.log.append({k: row[k] for k in LOG_COLUMNS})
        t.state.epoch = epoch
        if rank == 0:
            _save(t, out)
            # one line an epoch, bars or not: --no-progress must not be silent for minutes
            line = recipe.epoch_line(row, cfg.epochs)
            if progress:
                tqdm.write(line)
            else:
                print(line, flush=True)
    summary = recipe.summarise(cfg, t.state)
    if rank == 0:
        with STOP.writing():
            runfolder.write_atomic(out / "train.csv", pd.DataFrame(t.state.log).to_csv(index=False))
            runfolder.write_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _build(cfg: TrainConfig, ds: data.Tensors, device, rank: int, world: int) -> _Trainer:
    """Seed everything, put the data on the device, and build the model and its optimiser."""
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    padded, pre = inputs.model_input(ds, cfg.model)
    t0 = time.perf_counter()
    on_device = padded.to(device)
    synchronize(device)
    state = RunState(load_s=time.perf_counter() - t0)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = build_model(cfg.model, num_classes=len(ds.classes), in_channels=ds.channels)
    model = model.to(device=device, memory_format=memory_format)
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
    step = TrainStep(runner, model, device, PRECISIONS[cfg.precision].autocast, cfg.lr,
                     cfg.momentum, cfg.weight_decay)  # fmt: skip
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        step.optimizer, list(cfg.milestones), cfg.gamma
    )
    return _Trainer(cfg, device, rank, world, model, runner, step, scheduler, gen, on_device, pre,
                    state)  # fmt: skip


def _restore(t: _Trainer, path: Path) -> None:
    ckpt = recipe.read_checkpoint(path, t.cfg, t.device)
    t.model.load_state_dict(ckpt["model"])
    t.optimizer.load_state_dict(ckpt["optimizer"])
    t.scheduler.load_state_dict(ckpt["scheduler"])
    t.scaler.load_state_dict(ckpt["scaler"])
    recipe.set_rng_state(ckpt["rng"], t.gen)
    t.state = RunState(**ckpt["state"])


def _save(t: _Trainer, out: Path) -> None:
    """The checkpoint, then the epoch's log line: each written whole or not at all, and a stop
    waits for both, so train.jsonl never names an epoch the checkpoint lacks."""
    with STOP.writing():
        recipe.save_checkpoint(
            out / CHECKPOINT, model=t.model.state_dict(), optimizer=t.optimizer.state_dict(),
            scheduler=t.scheduler.state_dict(), scaler=t.scaler.state_dict(), rng=recipe.rng_state(t.gen),
            state=asdict(t.state), config=asdict(t.cfg), data=inputs.data_record(t.on_device, t.preprocess),
        )  # fmt: skip
        recipe.write_log(out, t.state.log)


def _evaluate(t: _Trainer, test_loader) -> tuple[float, float]:
    """Test loss and accuracy over every rank's share of the test set."""
    device = t.device
    t.model.eval()
    sums = torch.zeros(3, device=device, dtype=torch.float64)
    with torch.inference_mode(), t.amp():
        for x, y in test_loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            logits = t.runner(x).float()
            sums += torch.stack([F.cross_entropy(logits, y, reduction="sum").double(),
                                 (logits.argmax(1) == y).sum().double(),
                                 torch.tensor(len(y), device=device, dtype=torch.float64)])  # fmt: skip
    _all_reduce(sums, t.world)
    t.model.train()
    return (sums[0] / sums[2]).item(), (sums[1] / sums[2]).item()


def _train_epoch(t: _Trainer, train_loader, epoch: int, progress: bool, ckpt_path: Path) -> dict:
    """One epoch of timed training steps; its log row (without the evaluation)."""
    cfg, device = t.cfg, t.device
    steps = len(train_loader)
    t.model.train()
    lr = t.optimizer.param_groups[0]["lr"]
    losses = torch.zeros(steps, device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    bar = tqdm(total=steps, desc=f"epoch {epoch}/{cfg.epochs}", disable=not progress or t.rank != 0,
               leave=False, dynamic_ncols=True)  # fmt: skip
    synchronize(device)
    start = time.perf_counter()
    for i, (x, y) in enumerate(train_loader):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss, logits = t.step(x, y)
        losses[i] = loss.detach()  # no host sync per step: inspected at the epoch's end
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
        bar.update()
    synchronize(device)
    train_s = time.perf_counter() - start
    bar.close()
    bad = (~torch.isfinite(losses)).nonzero()
    if len(bad):
        raise NonFiniteLoss(
            f"non-finite loss at epoch {epoch}, step {int(bad[0]) + 1} of {steps} (lr {lr:g}); "
            f"training stopped. The last good checkpoint (epoch {t.state.epoch}) is kept at {ckpt_path}"
        )
    t.scheduler.step()
    totals = torch.stack([losses.sum(), correct.float(), torch.tensor(float(seen), device=device)])
    totals = _all_reduce(totals.double(), t.world)
    cum = (t.state.log[-1]["cum_train_s"] if t.state.log else 0.0) + train_s
    return {
        "epoch": epoch,
        "train_s": train_s,
        "cum_train_s": cum,
        "train_loss": (totals[0] / (steps * t.world)).item(),
        "train_acc": (totals[1] / totals[2]).item(),
        "lr": lr,
        "images_per_s": steps * cfg.batch_size / train_s,
    }


def _compile_warmup(t: _Trainer, device) -> float:
    """Compile the train and eval graphs on real batches, then restore the weights and BN statistics."""
    model, runner, cfg, amp, d = t.model, t.runner, t.cfg, t.amp, t.on_device
    snapshot = copy.deepcopy(model.state_dict())
    x = data.normalize(d.train_x[: cfg.batch_size], t.preprocess.mean, t.preprocess.std).contiguous(
        memory_format=torch.channels_last if cfg.channels_last else torch.contiguous_format
    )
    y = d.train_y[: cfg.batch_size]
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


def main(argv: Sequence[str] | None = None) -> int:
    with STOP.installed():  # SIGTERM ends a run as Ctrl-C does
        try:
            return cli.run_cli(
                "resbench.train", lambda: _main(build_parser().parse_args(argv), argv)
            )
        except KeyboardInterrupt:  # before the first epoch began (start_folder is never cut)
            if _dist_rank() == 0:
                print("\ninterrupted before training began; no checkpoint was written",
                      file=sys.stderr)  # fmt: skip
            return flags.EXIT_INTERRUPTED


def _dist_rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _main(args, argv) -> int:
    base = config_from_args(args)
    if args.resume and args.out is None:
        raise cli.UsageError("--resume needs --out RUN_FOLDER (the run to continue)")
    if args.resume and args.overwrite:
        raise cli.UsageError(
            "--resume continues the run in --out, --overwrite replaces it: give one"
        )
    rank, world, _ = _dist()
    out = args.out or Path("results") / f"train-{cli.timestamp()}"
    runs = args.runs or 1
    if rank == 0 and args.resume:  # the recorded recipe, with the flags given in its place
        base, runs = folder.resume_recipe(out, base, args.runs, flags.given_flags(argv))
        flags.check_config(base)
    if world > 1:
        import torch.distributed as dist

        box = [str(out), asdict(base), runs]
        dist.broadcast_object_list(box, src=0)
        out, runs = Path(box[0]), box[2]
        base = TrainConfig(**box[1])
    if world > 1 and base.data_loader != "device":
        raise cli.UsageError(
            "under torchrun use --data-loader device (it gives each rank its slice)"
        )
    run_dirs = folder.run_dirs_of(out, base, runs)
    if rank == 0:
        folder.check_folder(out, run_dirs, args, base)
    with runfolder.locked(out) if rank == 0 else contextlib.nullcontext():
        ds = inputs.load_data(args, base, rank, world)
        if base.batch_size > len(ds.train_x):
            raise cli.UsageError(
                f"--batch-size {base.batch_size} is larger than the {len(ds.train_x)} training "
                f"images in {ds.path}; use at most {len(ds.train_x)}"
            )
        argv_text = shlex.join(sys.argv[1:] if argv is None else list(argv))
        command = f"python -m resbench.train {argv_text}"
        env = collect_env() | {"command": command, "world_size": world}
        if rank == 0:
            with STOP.writing():  # an old run is removed whole, or not at all
                folder.start_folder(out, run_dirs, args, base, runs, command, env)
        return _train_all(args, base, ds, run_dirs, out, env, rank, world)


def _train_all(args, base, ds, run_dirs, out, env, rank, world) -> int:
    runs = []
    try:
        for i, run_dir in enumerate(run_dirs):
            cfg = TrainConfig(**{**asdict(base), "seed": base.seed + i})
            run_dir.mkdir(parents=True, exist_ok=True)
            runs.append((run_dir, train_run(cfg, ds, run_dir, args.resume, not args.no_progress)))
        if rank == 0:
            with STOP.writing():
                recipe.write_summary(out, base, runs, env)
    except NonFiniteLoss as exc:
        print(f"resbench.train: {exc}", file=sys.stderr)
        return flags.EXIT_DIVERGED
    except KeyboardInterrupt:
        if rank == 0:
            print(f"\ninterrupted; {folder.kept_text(out, run_dirs, base.epochs)}; resume with: "
                  f"{folder.resume_command(out, args, world)}", file=sys.stderr)  # fmt: skip
        return flags.EXIT_INTERRUPTED
    if rank == 0:
        finals = [s["final_test_acc"] for _, s in runs]
        print(
            f"final test accuracy {recipe.mean_std(finals)} over {cli.plural(len(runs), 'run')}; wrote {out / 'summary.md'}"
        )
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
