"""An ImageNet-style ImageFolder (one folder per class, JPEG or PNG), decoded lazily per ``take()``.

The tree is listed by ``torchvision.datasets.ImageFolder`` (classes sorted by folder name, as
torchvision numbers them), and each image is decoded as torchvision's ResNet weights expect: RGB,
resized so that its shorter side is round(size * 256 / 224) (256 for 224), centre cropped to size x
size, kept as uint8; ``Labelled.preprocess`` then normalises with the ImageNet mean and std. The
whole tree is one split, "test" (a validation set). ``make_synthetic_imagefolder`` writes a
learnable tree of PNGs for tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from resbench.data.core import DataError, Dataset, Labelled

SUFFIXES = (".png", ".jpg", ".jpeg")  # what detect() looks for (torchvision reads a few more)
DEFAULT_SIZE = 224


def resize_side(size: int) -> int:
    """The shorter side an image is resized to before the centre crop: 256 for 224."""
    return round(size * 256 / 224)


def is_image_folder(path: Path) -> bool:
    """Whether ``path`` holds class folders with .png/.jpg/.jpeg images in them."""
    if not path.is_dir():
        return False
    return any(
        f.suffix.lower() in SUFFIXES and f.is_file()
        for d in path.iterdir()
        if d.is_dir()
        for f in d.iterdir()
    )


@dataclass
class Folder(Labelled):
    """An ImageFolder tree: its (path, class index) samples, decoded at ``side`` on each take()."""

    samples: tuple[tuple[str, int], ...] = ()

    def splits(self) -> tuple[str, ...]:
        return ("test",)

    def labels(self, split: str) -> torch.Tensor:
        self._check_split(split)
        return torch.tensor([target for _, target in self.samples], dtype=torch.long)

    def count(self, split: str) -> int:
        self._check_split(split)
        return len(self.samples)

    def take(self, split: str, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from torchvision import transforms
        from torchvision.datasets.folder import default_loader

        indices = self._check_indices(split, indices)
        decode = transforms.Compose(
            [
                transforms.Resize(resize_side(self.side)),
                transforms.CenterCrop(self.side),
                transforms.PILToTensor(),
            ]
        )
        images, labels = [], []
        for i in indices.tolist():
            path, target = self.samples[i]
            try:
                images.append(decode(default_loader(path)))
            except Exception as exc:  # not an image, truncated, unreadable
                raise DataError(f"{path} is not a readable image ({type(exc).__name__})") from None
            labels.append(target)
        if not images:
            return torch.empty(0, 3, self.side, self.side, dtype=torch.uint8), torch.empty(
                0, dtype=torch.long
            )
        return torch.stack(images), torch.tensor(labels, dtype=torch.long)


def read(
    spec: Dataset, path: Path, download: bool = False, check: bool = True, size: int | None = None
) -> Folder:
    """List the ImageFolder at ``path``; images are decoded at ``size`` (default 224) on take().

    Args:
        download, check: unused (there is nothing to fetch; images are checked as they decode).
    """
    from torchvision.datasets import ImageFolder

    size = DEFAULT_SIZE if size is None else size
    if size < 1:
        raise DataError(f"an ImageFolder is decoded at a positive size; got {size}")
    if not path.is_dir():
        raise DataError(f"no ImageFolder at {path}: it is not a folder")
    try:
        tree = ImageFolder(str(path))
    except (FileNotFoundError, OSError) as exc:  # no class folders, or one with no images
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(
            f"{path} is not an ImageFolder (one folder per class of .png/.jpg images): {first}"
        ) from None
    samples = tuple((p, int(t)) for p, t in tree.samples)
    return Folder(spec.name, str(path), tuple(tree.classes), spec.mean, spec.std, spec.flip,
                  spec.channels, size, samples=samples)  # fmt: skip


def make_synthetic_imagefolder(
    folder: Path | str,
    n_classes: int = 3,
    per_class: int = 4,
    side: int = 40,
    seed: int = 0,
    suffix: str = ".png",
) -> Path:
    """Write a learnable ImageFolder: ``folder/class<k>/<j>.png``, each class a colour and an
    oriented stripe pattern at a random phase, plus noise; images are ``side`` x ``side`` RGB."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(folder)
    palette = rng.uniform(40, 215, size=(n_classes, 3))
    angles = np.linspace(0, np.pi, n_classes, endpoint=False)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    for k in range(n_classes):
        (root / f"class{k}").mkdir(parents=True, exist_ok=True)
        for j in range(per_class):
            proj = xx * np.cos(angles[k]) + yy * np.sin(angles[k])
            stripes = np.sin(0.5 * proj + rng.uniform(0, 2 * np.pi))
            img = palette[k] + 50 * stripes[..., None] + rng.normal(0, 20, (side, side, 3))
            pixels = np.clip(img, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"class{k}" / f"{j}{suffix}")
    return root
