"""MNIST and Fashion-MNIST: the four idx files, gzipped or not, read through torchvision's own code.

The files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
``t10k-labels-idx1-ubyte``, each possibly ``.gz``) may lie flat in a folder, as Debian's
``dataset-fashion-mnist`` installs them in /usr/share/datasets/fashion-mnist, or in torchvision's
layout, ``<root>/FashionMNIST/raw/`` (``<root>/MNIST/raw/``), where ``download`` puts them through
``torchvision.datasets.FashionMNIST(root, download=True)``. They are parsed by
``torchvision.datasets.mnist.read_image_file``/``read_label_file``; a ``.gz`` is first decompressed
into a temporary folder with torchvision's ``extract_archive``. There is no md5 to check the files
against (distributions recompress the ``.gz``; torchvision has none for the decompressed files), so
they are checked for what they must be instead: the idx header, 28x28 uint8 images, as many labels
as images, labels within the classes. ``make_synthetic_idx`` writes a learnable stand-in in the
same format.
"""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

import numpy as np
import torch

from resbench.data.core import DataError, Dataset, Tensors, fetch_command

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IMAGE_MAGIC, LABEL_MAGIC = 0x00000803, 0x00000801  # idx: uint8 data, 3 dimensions / 1 dimension


def _file(folder: Path, name: str) -> Path | None:
    """``folder/name``, else ``folder/name.gz`` (torchvision's layout keeps both), else None."""
    for path in (folder / name, folder / f"{name}.gz"):
        if path.is_file():
            return path
    return None


def holds_idx(folder: Path) -> bool:
    """Whether ``folder`` holds idx image files (train or test, gzipped or not)."""
    return folder.is_dir() and any(_file(folder, FILES[s][0]) for s in FILES)


def raw_folder(root: Path, torchvision_name: str) -> Path:
    """Where torchvision keeps a dataset's files under ``root``: ``root/FashionMNIST/raw``."""
    return root / torchvision_name / "raw"


def detect(path: Path, names: dict[str, str], guess: bool = True) -> str | None:
    """The dataset the idx files in ``path`` are, or None if it holds none.

    The two datasets' files have one format, so only where they lie tells them apart: torchvision's
    ``<Name>/raw`` folders, or a flat folder's name (one named for fashion is Fashion-MNIST, one
    named ``mnist`` MNIST). A flat folder named for neither is taken for MNIST: a guess.

    Args:
        names: torchvision's folder name -> dataset name ({"FashionMNIST": "fashion-mnist", ...}).
        guess: False: None for a flat folder named for neither, instead of the guess.
    """
    held = [names[tv] for tv in names if holds_idx(raw_folder(path, tv))]
    if len(held) > 1:
        raise DataError(
            f"{path} holds {' and '.join(f'{tv}/raw/' for tv in names)}; give one of those folders"
        )
    if held:
        return held[0]
    if path.name == "raw" and path.parent.name in names and holds_idx(path):
        return names[path.parent.name]
    if holds_idx(path):  # a flat folder says which by its name: /usr/share/datasets/fashion-mnist
        name = path.resolve().name.lower()
        if "fashion" in name:
            return names["FashionMNIST"]
        if guess or name == "mnist":
            return names["MNIST"]
    return None


def locate(spec: Dataset, path: Path) -> Path | None:
    """The folder holding ``spec``'s idx files: torchvision's layout under ``path``, else it."""
    for folder in (raw_folder(path, spec.torchvision), path):
        if holds_idx(folder):
            return folder
    return None


def _parse(path: Path, reader, kind: str) -> torch.Tensor:
    """One idx file through torchvision's ``reader``, a ``.gz`` decompressed first; a DataError of
    one line when it is truncated, corrupt or not an idx file of this kind."""
    from torchvision.datasets.utils import extract_archive

    try:
        if path.suffix != ".gz":
            return reader(str(path))
        with tempfile.TemporaryDirectory(prefix="resbench-idx-") as tmp:
            return reader(extract_archive(str(path), tmp))
    except Exception as exc:  # a bad header (assert), a short file (view), a broken gzip stream
        text = str(exc).strip()
        why = f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
        raise DataError(f"{path} is truncated, corrupt or not an idx {kind} file ({why})") from None


def _split(spec: Dataset, folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision.datasets.mnist import read_image_file, read_label_file

    found = [_file(folder, name) for name in FILES[split]]
    missing = [f"{name}[.gz]" for name, p in zip(FILES[split], found, strict=True) if p is None]
    if missing:
        raise DataError(
            f"{folder} lacks {', '.join(missing)}: an idx folder holds "
            f"{', '.join(n for pair in FILES.values() for n in pair)} (each may be .gz)"
        )
    images = _parse(found[0], read_image_file, "image")
    labels = _parse(found[1], read_label_file, "label")
    if tuple(images.shape[1:]) != (spec.side, spec.side):
        raise DataError(
            f"{found[0]} holds images of {'x'.join(map(str, images.shape[1:]))} pixels; "
            f"{spec.title} images are {spec.side}x{spec.side}"
        )
    if len(labels) != len(images):
        raise DataError(
            f"{found[1]} holds {len(labels)} labels for the {len(images)} images of {found[0].name}"
        )
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= len(spec.classes)):
        raise DataError(
            f"{found[1]} has labels outside 0..{len(spec.classes) - 1} ({spec.title} has "
            f"{len(spec.classes)} classes)"
        )
    return images.unsqueeze(1).contiguous(), labels


def read(
    spec: Dataset, path: Path, download: bool = False, check: bool = True, size: int | None = None
) -> Tensors:
    """Decode ``spec``'s four idx files under ``path`` (either layout) into uint8 N,1,28,28.

    Args:
        download: fetch them through torchvision into ``path/<Name>/raw`` if none are found.
        check: unused (no md5 exists for these files; they are checked for their structure).
        size: unused (the images are 28x28).
    """
    folder = locate(spec, path)
    if folder is None and download:
        spec.download(path)
        folder = locate(spec, path)
    if folder is None:
        raise DataError(
            f"no {spec.title} at {path} (the idx files, flat or in "
            f"{raw_folder(path, spec.torchvision)}/): fetch it with "
            f"{fetch_command(path, spec.name)}, or give the folder that holds them"
        )
    return spec.labelled(folder, *_split(spec, folder, "train"), *_split(spec, folder, "test"))


def download(torchvision_name: str, root: Path) -> None:
    """Fetch the four files (md5-checked) into ``root/<Name>/raw`` through torchvision's class."""
    import torchvision.datasets

    try:
        getattr(torchvision.datasets, torchvision_name)(str(root), train=True, download=True)
    except Exception as exc:  # no network, a failed md5, a read-only folder
        # torchvision's message spans lines ("Error downloading x:\nTried <mirror>, got:\n<why>")
        why = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        raise DataError(
            f"could not download {torchvision_name} into {root}: {why or type(exc).__name__}"
        ) from None


# ----------------------------------------------------------------------------- synthetic data


def make_synthetic_idx(
    folder: Path | str,
    n_train: int = 600,
    n_test: int = 100,
    seed: int = 0,
    layout: str = "flat",
    gzipped: bool = True,
    torchvision_name: str = "FashionMNIST",
    noise: float = 30.0,
) -> Path:
    """Write a learnable 10-class, 28x28 grayscale stand-in as the four idx files.

    Each class is a brightness and an oriented stripe pattern at a random phase, plus noise.

    Args:
        layout: "flat" (the files in ``folder``, as Debian installs them) or "torchvision"
            (in ``folder/<torchvision_name>/raw``, as torchvision downloads them).
        gzipped: write ``.gz`` files (as published), else the decompressed files.
    Returns: the folder holding the files.
    """
    if layout not in ("flat", "torchvision"):
        raise ValueError(f"layout must be 'flat' or 'torchvision'; got {layout!r}")
    rng = np.random.default_rng(seed)
    out = Path(folder) if layout == "flat" else raw_folder(Path(folder), torchvision_name)
    out.mkdir(parents=True, exist_ok=True)
    level = rng.uniform(60, 195, size=10)
    angles = np.linspace(0, np.pi, 10, endpoint=False)
    yy, xx = np.mgrid[0:28, 0:28].astype(np.float32)

    def images(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, 10, size=n)
        phase = rng.uniform(0, 2 * np.pi, size=n)
        proj = (xx[None] * np.cos(angles[labels])[:, None, None]
                + yy[None] * np.sin(angles[labels])[:, None, None])  # fmt: skip
        img = level[labels][:, None, None] + 50 * np.sin(0.6 * proj + phase[:, None, None])
        img = img + rng.normal(0, noise, (n, 28, 28))
        return np.clip(img, 0, 255).astype(np.uint8), labels.astype(np.uint8)

    for split, n in (("train", n_train), ("test", n_test)):
        x, y = images(n)
        image_name, label_name = FILES[split]
        header = np.array([IMAGE_MAGIC, n, 28, 28], dtype=">u4").tobytes()
        _write(out / image_name, header + x.tobytes(), gzipped)
        _write(out / label_name, np.array([LABEL_MAGIC, n], dtype=">u4").tobytes() + y.tobytes(),
               gzipped)  # fmt: skip
    return out


def _write(path: Path, payload: bytes, gzipped: bool) -> None:
    if gzipped:
        with gzip.open(path.with_name(path.name + ".gz"), "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)
