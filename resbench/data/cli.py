"""The command line: ``python -m resbench.data`` fetches, checks or synthesises a dataset.

Usage::

    python -m resbench.data --data-dir data --download                        # CIFAR-10
    python -m resbench.data --dataset fashion-mnist --data-dir /usr/share/datasets/fashion-mnist
    python -m resbench.data --dataset fashion-mnist --data-dir data --download  # FashionMNIST/raw
    python -m resbench.data --data-dir /tmp/fake --synthetic 50000            # a learnable stand-in
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from resbench.data import cifar
from resbench.data.catalog import DATASETS, load
from resbench.data.folders import make_synthetic_imagefolder
from resbench.data.idx import make_synthetic_idx


def synthesise(name: str, folder: Path, n_train: int) -> Path:
    """Write a learnable stand-in for ``name`` in its own on-disk format; the folder it fills."""
    n_test = max(1000, n_train // 5)
    if name == "cifar10":
        if n_train < len(cifar.TRAIN_FILES):
            raise ValueError(f"--synthetic needs at least {len(cifar.TRAIN_FILES)} images")
        return cifar.make_synthetic(folder, n_train, n_test)
    if n_train < 1:
        raise ValueError(f"--synthetic needs at least 1 image; got {n_train}")
    if name == "imagefolder":
        return make_synthetic_imagefolder(folder, n_classes=10, per_class=-(-n_train // 10))
    return make_synthetic_idx(folder, n_train, n_test, layout="torchvision",
                              torchvision_name=DATASETS[name].torchvision)  # fmt: skip


def build_parser():
    """The command line's parser (also what the docs' ``--help`` block is generated from)."""
    from resbench.cli import Parser

    p = Parser(
        prog="python -m resbench.data",
        description="Fetch, check or synthesise a labelled dataset.",
    )
    p.add_argument(
        "--dataset", choices=list(DATASETS), default="cifar10", help="(default: %(default)s)"
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path("data"),
        help="the folder that holds it (the idx files flat or in <dir>/FashionMNIST/raw/) "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--download",
        action="store_true",
        help="fetch the official files if absent (not for an ImageFolder)",
    )
    p.add_argument(
        "--no-verify", action="store_true", help="skip CIFAR-10's md5 check (data you made)"
    )
    p.add_argument("--synthetic", type=int, metavar="N", help="write N learnable training images")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from resbench.cli import run_cli

    def body() -> int:
        args = build_parser().parse_args(argv)
        if args.synthetic is not None:
            folder = synthesise(args.dataset, args.data_dir, args.synthetic)
            print(f"wrote a synthetic {DATASETS[args.dataset].title} stand-in to {folder}")
            return 0
        if args.download and DATASETS[args.dataset].download is None:
            raise ValueError(f"--download: there is nothing to fetch for {args.dataset}")
        ds = load(args.dataset, args.data_dir, download=args.download, check=not args.no_verify)
        counts = ", ".join(f"{ds.count(s)} {s}" for s in ds.splits())
        print(
            f"{DATASETS[ds.name].title} at {ds.path}: {counts} images "
            f"({ds.channels}x{ds.side}x{ds.side}, {len(ds.classes)} classes)"
        )
        return 0

    return run_cli("resbench.data", body)
