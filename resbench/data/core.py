"""What every dataset is, whatever its files: labelled uint8 images, and the rule feeding a model.

``Labelled`` is a dataset read from disk: its facts (classes, channels, native side, mean and std)
and its images, split by split, as uint8 ``N,C,side,side`` tensors in the order asked. ``Tensors``
holds them all in memory (CIFAR-10, MNIST, Fashion-MNIST: the trainer keeps them on its device);
an ImageFolder decodes them per ``take()`` (``folders.py``). ``Preprocess`` is how raw images
become a model's input (repeat channels, zero pad or resize, normalise), as plain data that a
checkpoint records, so a scorer applies exactly what the trainer applied.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

MAX_PAD = 4  # a side at most 8 short of the model's is zero padded (28 -> 32: 2 a side)


class DataError(ValueError):
    """Missing, corrupt, unverifiable or unusable data: reported as one line, exit code 2."""


def fetch_command(data_dir: Path | str, dataset: str = "cifar10") -> str:
    """The command that fetches ``dataset`` into ``data_dir``, for messages shown by any tool (not
    every tool that reads data can download it, so none is told to pass a flag it lacks)."""
    which = "" if dataset == "cifar10" else f" --dataset {dataset}"
    return f"python -m resbench.data{which} --data-dir {shlex.quote(str(data_dir))} --download"


@dataclass(frozen=True)
class Dataset:
    """One dataset's facts and how to read and fetch it: an entry of ``DATASETS``."""

    name: str  # the key: "cifar10", "fashion-mnist", ...
    title: str  # as people write it: "Fashion-MNIST"
    classes: tuple[str, ...] | None  # None: the folder names them (an ImageFolder)
    channels: int
    side: int | None  # native image side; None: decoded at the size asked (an ImageFolder)
    mean: tuple[float, ...]  # per channel, over pixels scaled to [0, 1]
    std: tuple[float, ...]
    flip: bool  # whether a horizontal flip suits it (not for digits: a mirrored 2 is no 2)
    reader: Callable  # reader(spec, path, download=, check=, size=) -> Labelled
    download: Callable | None = None  # download(folder): fetch the official files into folder
    torchvision: str | None = None  # torchvision's class for it (and its folder under a root)
    splits: tuple[str, ...] = ("train", "test")

    def labelled(self, path: Path, train_x, train_y, test_x, test_y) -> Tensors:
        """The in-memory dataset of these facts over the four tensors."""
        return Tensors(self.name, str(path), self.classes, self.mean, self.std, self.flip,
                       self.channels, self.side, train_x, train_y, test_x, test_y)  # fmt: skip


def normalize(
    x_uint8: torch.Tensor,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """uint8 pixels -> (x / 255 - mean) / std per channel, on the images' device.

    The one expression the trainer's loaders and ``Preprocess.apply`` share, so both give the same
    floats, bit for bit.
    """
    mean_t = torch.tensor(mean, device=x_uint8.device, dtype=dtype).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=x_uint8.device, dtype=dtype).view(1, -1, 1, 1)
    return (x_uint8.to(dtype) / 255 - mean_t) / std_t


@dataclass(frozen=True)
class Preprocess:
    """How raw uint8 images become the model's input; plain data (``to_dict``) for a checkpoint."""

    mean: tuple[float, ...]  # per model input channel (repeated when the channels are)
    std: tuple[float, ...]
    channels: int  # the model's in_channels
    size: int  # the model's input side
    pad: int = 0  # zero pixels added on each side, in pixel space (28 -> 32: 2)
    resize: bool = False  # else: bilinear (antialiased) resize to size x size

    def pixels(self, x: torch.Tensor) -> torch.Tensor:
        """The pixel-space steps, still uint8: channels repeated to the model's, zero padding."""
        if x.dtype != torch.uint8 or x.ndim != 4:
            raise DataError(
                f"Preprocess takes uint8 images of shape N,C,H,W; got {x.dtype} of shape "
                f"{tuple(x.shape)}"
            )
        if x.shape[1] != self.channels:
            if x.shape[1] != 1:
                raise DataError(
                    f"{x.shape[1]}-channel images cannot feed a {self.channels}-channel model "
                    "(only 1-channel images are repeated to the model's channels)"
                )
            x = x.expand(-1, self.channels, -1, -1)
        if self.pad:
            x = F.pad(x, (self.pad,) * 4)
        if not self.resize and x.shape[-2:] != (self.size, self.size):
            raise DataError(
                f"images of {x.shape[-2] - 2 * self.pad}x{x.shape[-1] - 2 * self.pad} pixels do "
                f"not give this model's {self.size}x{self.size} input with {self.pad} pixels of "
                "padding a side"
            )
        return x

    def apply(self, x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """uint8 N,C,h,w on any device -> N,channels,size,size, normalised, on the same device."""
        x = self.pixels(x)
        if not self.resize:
            return normalize(x, self.mean, self.std, dtype)
        scaled = F.interpolate(x.float() / 255, size=(self.size, self.size), mode="bilinear",
                               align_corners=False, antialias=True).to(dtype)  # fmt: skip
        mean = torch.tensor(self.mean, device=x.device, dtype=dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=dtype).view(1, -1, 1, 1)
        return (scaled - mean) / std

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std), "channels": self.channels,
                "size": self.size, "pad": self.pad, "resize": self.resize}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict) -> Preprocess:
        names = [f.name for f in dataclasses.fields(cls)]
        if not isinstance(d, dict) or not {"mean", "std", "channels", "size"} <= d.keys():
            raise DataError(f"not a preprocessing record: it needs {', '.join(names[:4])}")
        try:
            pre = cls(tuple(float(v) for v in d["mean"]), tuple(float(v) for v in d["std"]),
                      int(d["channels"]), int(d["size"]), int(d.get("pad", 0)),
                      bool(d.get("resize", False)))  # fmt: skip
        except (TypeError, ValueError) as exc:
            raise DataError(f"a malformed preprocessing record ({exc})") from None
        if len(pre.mean) != pre.channels or len(pre.std) != pre.channels:
            raise DataError(
                f"a preprocessing record for {pre.channels} channels with {len(pre.mean)} means "
                f"and {len(pre.std)} standard deviations"
            )
        return pre


def plan(
    channels: int, side: int, mean, std, size: int, model_channels: int, name: str = "the data"
) -> Preprocess:
    """The documented rule: images of ``channels`` x ``side`` x ``side`` into a model taking
    ``model_channels`` x ``size`` x ``size``.

    Channels: as is when they match; 1-channel images repeated to the model's (mean and std
    repeated); anything else is a DataError. Size: as is when equal; zero padded (size - side) / 2
    a side when side is smaller by an even number up to 8 (28 -> 32); otherwise resized.
    """
    if channels == model_channels:
        mean, std = tuple(mean), tuple(std)
    elif channels == 1:
        mean, std = tuple(mean) * model_channels, tuple(std) * model_channels
    else:
        raise DataError(
            f"{name} has {channels}-channel images, which a {model_channels}-channel model "
            f"cannot take (only 1-channel images are repeated); build the model with "
            f"in_channels={channels}"
        )
    short = size - side
    if short == 0:
        return Preprocess(mean, std, model_channels, size)
    if 0 < short <= 2 * MAX_PAD and short % 2 == 0:
        return Preprocess(mean, std, model_channels, size, pad=short // 2)
    return Preprocess(mean, std, model_channels, size, resize=True)


@dataclass
class Labelled:
    """A labelled image dataset: its facts, and its images by split (see the subclasses)."""

    name: str  # a DATASETS key
    path: str
    classes: tuple[str, ...]
    mean: tuple[float, ...]  # per channel of the data, over pixels scaled to [0, 1]
    std: tuple[float, ...]
    flip: bool  # whether a horizontal flip suits it (not for digits)
    channels: int  # 1 (grayscale) or 3
    side: int  # native image side (28, 32; an ImageFolder: the decode size)

    def splits(self) -> tuple[str, ...]:
        raise NotImplementedError

    def count(self, split: str) -> int:
        return len(self.labels(split))

    def labels(self, split: str) -> torch.Tensor:
        raise NotImplementedError

    def take(self, split: str, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 N,C,side,side images and int64 labels, in the order of ``indices``."""
        raise NotImplementedError

    def preprocess(self, size: int, channels: int) -> Preprocess:
        return plan(self.channels, self.side, self.mean, self.std, size, channels,
                    f"{self.name} at {self.path}")  # fmt: skip

    def _check_split(self, split: str) -> None:
        if split not in self.splits():
            raise DataError(
                f"{self.name} at {self.path} has no {split!r} split; it has: "
                f"{', '.join(self.splits())}"
            )

    def _check_indices(self, split: str, indices: torch.Tensor) -> torch.Tensor:
        indices = torch.as_tensor(indices, dtype=torch.long).cpu().reshape(-1)
        n = self.count(split)
        if len(indices) and (int(indices.min()) < -n or int(indices.max()) >= n):
            raise DataError(f"an index outside the {n} images of {self.name}'s {split} split")
        return indices


@dataclass
class Tensors(Labelled):
    """A dataset held whole in memory as uint8 NCHW images and int64 labels (train and test)."""

    train_x: torch.Tensor = None
    train_y: torch.Tensor = None
    test_x: torch.Tensor = None
    test_y: torch.Tensor = None

    def splits(self) -> tuple[str, ...]:
        return ("train", "test")

    def _split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_split(split)
        return (self.train_x, self.train_y) if split == "train" else (self.test_x, self.test_y)

    def labels(self, split: str) -> torch.Tensor:
        return self._split(split)[1]

    def take(self, split: str, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self._split(split)
        indices = self._check_indices(split, indices).to(x.device)
        return x[indices], y[indices]

    def to(self, device: torch.device | str) -> Tensors:
        moved = (t.to(device) for t in (self.train_x, self.train_y, self.test_x, self.test_y))
        return dataclasses.replace(self, **dict(zip(("train_x", "train_y", "test_x", "test_y"),
                                                    moved, strict=True)))  # fmt: skip
