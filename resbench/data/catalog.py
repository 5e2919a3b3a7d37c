"""Every dataset resbench reads, as data (``DATASETS``), and the two calls that read one.

``load(name, path)`` returns a ``Labelled``; ``detect(path)`` names what a folder holds. The
statistics are per channel over the training images scaled to [0, 1]: CIFAR-10's as the trainer
has always used them, MNIST's (0.1307, 0.3081) and Fashion-MNIST's (0.2860, 0.3530) as commonly
published, and ImageNet's, which torchvision's ResNet weights were trained with.
"""

from __future__ import annotations

import functools
from pathlib import Path

from resbench.data import cifar, folders, idx
from resbench.data.core import DataError, Dataset, Labelled

DATASETS: dict[str, Dataset] = {
    "cifar10": Dataset(
        "cifar10", "CIFAR-10", cifar.CLASSES, channels=3, side=32,
        mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616), flip=True,
        reader=cifar.read, download=cifar.download, torchvision="CIFAR10",
    ),
    "fashion-mnist": Dataset(
        "fashion-mnist", "Fashion-MNIST",
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
         "Bag", "Ankle boot"),
        channels=1, side=28, mean=(0.2860,), std=(0.3530,), flip=True,  # a mirrored shoe is a shoe
        reader=idx.read, download=functools.partial(idx.download, "FashionMNIST"),
        torchvision="FashionMNIST",
    ),
    "mnist": Dataset(
        "mnist", "MNIST",
        ("0 - zero", "1 - one", "2 - two", "3 - three", "4 - four", "5 - five", "6 - six",
         "7 - seven", "8 - eight", "9 - nine"),
        channels=1, side=28, mean=(0.1307,), std=(0.3081,), flip=False,  # a mirrored 2 is no 2
        reader=idx.read, download=functools.partial(idx.download, "MNIST"), torchvision="MNIST",
    ),
    "imagefolder": Dataset(
        "imagefolder", "ImageFolder", None, channels=3, side=None,
        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), flip=True,
        reader=folders.read, splits=("test",),
    ),
}  # fmt: skip


def _idx_names() -> dict[str, str]:
    """torchvision's folder name -> dataset name, for the datasets kept as idx files."""
    return {s.torchvision: s.name for s in DATASETS.values() if s.reader is idx.read}


def load(
    name: str,
    path: Path | str,
    *,
    download: bool = False,
    check: bool = True,
    size: int | None = None,
) -> Labelled:
    """The dataset ``name`` (a DATASETS key) at ``path``; a DataError of one line if it is missing,
    corrupt or laid out otherwise.

    Args:
        download: fetch the official files into ``path`` first when they are absent (CIFAR-10,
            MNIST, Fashion-MNIST, through torchvision's downloaders).
        check: verify CIFAR-10 against its official md5s (turn off for data you made).
        size: the side an ImageFolder is decoded at (default 224); the others keep their own.
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    spec = DATASETS[name]
    return spec.reader(spec, Path(path), download=download, check=check, size=size)


def detect(path: Path | str, guess: bool = True) -> str | None:
    """What ``path`` holds: "cifar10", "fashion-mnist", "mnist" or "imagefolder"; a DataError of
    one line naming the layouts resbench reads when it is none of them.

    MNIST's and Fashion-MNIST's idx files differ only in where they lie (``idx.detect``): a flat
    folder named for neither is taken for MNIST, a guess; ``guess=False`` gives None for it, so a
    caller can tell what the folder says from what is assumed."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist")
    if not path.is_dir():
        raise DataError(f"{path} is not a folder (give the folder that holds the data)")
    if path.name == cifar.FOLDER or (path / cifar.FOLDER).is_dir():
        return "cifar10"
    found = idx.detect(path, _idx_names(), guess)
    if found:
        return found
    if not guess and idx.holds_idx(path):
        return None
    if folders.is_image_folder(path):
        return "imagefolder"
    raise DataError(
        f"{path} holds no dataset resbench reads: it takes a folder holding {cifar.FOLDER}/ "
        f"(CIFAR-10); the idx files ({idx.FILES['train'][0]}[.gz] and the other three) flat or in "
        f"FashionMNIST/raw/ or MNIST/raw/ (Fashion-MNIST, MNIST); or an ImageFolder (one folder "
        f"per class of {'/'.join(folders.SUFFIXES)} images)"
    )
