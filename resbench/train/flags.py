"""The trainer's command line: its flags, their bounds, the exit codes, and the TrainConfig they give.

Count flags are bounded by what can finish, the bound named beside the flag; ``--precision`` offers
only the precisions that train. ``given_flags`` tells the flags given from the defaults, so
``--resume`` takes the others from the run's record.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from resbench import cli
from resbench.data import DATASETS
from resbench.engine.devices import parse_device
from resbench.engine.measure import Config, validate_config
from resbench.models import list_models
from resbench.settings import COMPILE_MODES, PRECISIONS
from resbench.train.recipe import TrainConfig

# the datasets with a training split (an ImageFolder is a validation set)
TRAIN_DATASETS = tuple(name for name, d in DATASETS.items() if "train" in d.splits)
# the precisions that train (int8 is quantised inference only)
TRAIN_PRECISIONS = tuple(name for name, p in PRECISIONS.items() if "train" in p.modes)
# count flags are bounded by what can finish (the bounds live in cli.BOUNDS, beside every tool's)
MAX_EPOCHS, MAX_RUNS = cli.BOUNDS["--epochs"].high, cli.BOUNDS["--runs"].high
MAX_WORKERS, MAX_SEED = cli.BOUNDS["--workers"].high, cli.BOUNDS["--seed"].high

EXIT_DIVERGED = 3  # a non-finite loss stopped training (2 is a usage error)
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM: every finished epoch's checkpoint is kept
EXIT_CODES = f"""exit codes:
  0    every run trained its epochs; summary.md is written
  {cli.EXIT_IO}    a file could not be read or written (full or read-only disk); the path is named
  {cli.EXIT_USAGE}    a usage error: bad flags, a run folder in use, holding a run, or of another recipe
  {EXIT_DIVERGED}    a non-finite loss stopped training; the last good checkpoint is kept
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C, SIGTERM); every finished epoch is kept; --resume continues
"""


def build_parser() -> cli.Parser:
    d = TrainConfig()
    p = cli.Parser(
        prog="python -m resbench.train",
        description="Train on CIFAR-10, Fashion-MNIST or MNIST; report accuracy versus time.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--dataset",
        choices=TRAIN_DATASETS,
        default=d.dataset,
        help="the images to train on; 28x28 ones are zero padded to 32 (default: %(default)s)",
    )
    p.add_argument(
        "--model",
        default=d.model,
        help=f"a CIFAR-family model: {', '.join(list_models('cifar'))} (default: %(default)s)",
    )
    cli.add_device(p)
    cli.add_setting_flags(p, many=False, precisions=TRAIN_PRECISIONS)
    p.add_argument(
        "--epochs",
        type=int,
        help=f"1 to {MAX_EPOCHS} (default: {d.epochs}; with --resume, the run's own)",
    )
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
    p.add_argument(
        "--seed", type=int, default=d.seed, help=f"0 to {MAX_SEED} (default: %(default)s)"
    )
    p.add_argument(
        "--runs",
        type=int,
        help=f"seeds seed..seed+N-1 back to back, 1 to {MAX_RUNS} (default: 1; with --resume, "
        "the run's own)",
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
        default=Path(d.data_dir),
        help="folder holding cifar-10-batches-py/, or the idx files flat or in "
        "<dir>/FashionMNIST/raw/ (<dir>/MNIST/raw/); files that say they are another --dataset's "
        "are refused (default: %(default)s; with --resume, the run's own)",
    )
    p.add_argument(
        "--download",
        action="store_true",
        help="fetch the dataset into --data-dir if absent (torchvision's downloaders)",
    )
    p.add_argument(
        "--no-verify",
        action="store_true",
        help="skip CIFAR-10's md5 check (for data you made yourself)",
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
        help=f"DataLoader workers for --data-loader torchvision, 0 to {MAX_WORKERS} "
        "(default: %(default)s)",
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
        help="continue the run in --out (each of its seeds) from its checkpoints: flags not given "
        "take the recorded values (--data-dir too); recipe flags given must match them; --epochs "
        "may grow",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run that --out holds: every file the trainer wrote for it is removed "
        "first (a folder holding other files is refused); without it, such a folder is refused",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def given_flags(argv) -> set[str]:
    """The dests the command line sets (the others are defaults, which --resume takes from the
    record): argparse fills in a default only where the namespace lacks the dest."""
    parser = build_parser()
    unset = argparse.Namespace(**dict.fromkeys(vars(parser.parse_args([]))))
    return {k for k, v in vars(parser.parse_args(argv, namespace=unset)).items() if v is not None}


def config_from_args(args) -> TrainConfig:
    """The TrainConfig the flags give (unset --epochs: the recipe's); a UsageError of one line
    naming the flag when one is out of bounds."""
    if args.model not in list_models("cifar"):
        raise cli.UsageError(
            f"--model must be a CIFAR-family model; choose one of: {', '.join(list_models('cifar'))}"
        )
    for flag in ("--epochs", "--runs", "--workers", "--seed"):
        value = getattr(args, flag[2:])
        if value is not None:  # unset --epochs and --runs: the recipe's, or the run's on --resume
            cli.bounded(value, flag)
    cli.bounded(args.batch_size, "--batch-size")  # and at most the training images: once loaded
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
    if args.precision not in TRAIN_PRECISIONS:
        modes = PRECISIONS[args.precision].modes if args.precision in PRECISIONS else ()
        why = f"is for {' and '.join(modes)} only" if modes else "is not a precision"
        raise cli.UsageError(
            f"--precision {args.precision} {why}; the trainer trains in: {', '.join(TRAIN_PRECISIONS)}"
        )
    if args.compile not in COMPILE_MODES:
        raise cli.UsageError(
            f"unknown --compile {args.compile!r}; choose one of: {', '.join(COMPILE_MODES)}"
        )
    channels_last = cli.parse_on_off(args.channels_last, "--channels-last")[0]
    return check_config(TrainConfig(
        dataset=args.dataset, model=args.model, epochs=args.epochs or TrainConfig.epochs, batch_size=args.batch_size, lr=args.lr,
        momentum=args.momentum, weight_decay=args.weight_decay, milestones=milestones, gamma=args.gamma,
        precision=args.precision, channels_last=channels_last, compile=args.compile, seed=args.seed,
        deterministic=args.deterministic, device=args.device, data_loader=args.data_loader,
        workers=args.workers, pad_mode=args.pad_mode, targets=targets, flush_denormal=not args.keep_denormals,
        data_dir=str(args.data_dir.absolute()),
    ))  # fmt: skip


def check_config(cfg: TrainConfig) -> TrainConfig:
    """The same device/precision rules as every measurement of a train step (fp16 needs a GPU,
    tf32 needs CUDA); also for a resumed run's recorded recipe, which may name another device."""
    if cfg.dataset not in TRAIN_DATASETS:
        raise cli.UsageError(
            f"--dataset {cfg.dataset} is not one the trainer trains on; choose one of: "
            f"{', '.join(TRAIN_DATASETS)}"
        )
    parse_device(cfg.device)
    validate_config(Config(cfg.model, cfg.batch_size, device=cfg.device, mode="train",
                           precision=cfg.precision, channels_last=cfg.channels_last,
                           compile=cfg.compile))  # fmt: skip
    return cfg
