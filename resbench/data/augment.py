"""Training batches on the device: random crop, flip and normalisation there, no DataLoader.

``DeviceLoader`` draws batch indices from a per-epoch permutation and augments each batch on its
device from one CPU ``torch.Generator`` (reproducible and resumable; DDP ranks take their slice),
with the dataset's mean and std, and flips only where they suit the data (not digits).
``torchvision_loader`` is the familiar DataLoader + per-image transforms baseline.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from resbench.data.core import normalize


def augment(
    x: torch.Tensor,
    dy: torch.Tensor,
    dx: torch.Tensor,
    flip: torch.Tensor,
    pad: int = 4,
    mode: str = "reflect",
) -> torch.Tensor:
    """Random crop (after padding by ``pad``) and horizontal flip of a batch, all on its device.

    dy, dx in [0, 2*pad] pick each image's window; flip is a bool per image.
    """
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode=mode)
    rows = (torch.arange(h, device=x.device)[None, :] + dy[:, None])[:, None, :, None]
    cols = torch.arange(w, device=x.device)[None, :] + dx[:, None]
    cols = torch.where(flip[:, None], cols.flip(1), cols)[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, chans, rows, cols]


class DeviceLoader:
    """Batches of augmented, normalised images from device-resident uint8 tensors.

    ``rank``/``world`` give each DDP rank its slice of every global batch; all ranks draw the same
    permutation and augmentation numbers from ``generator``. ``mean``/``std`` are the data's, per
    channel; with ``flip=False`` the flip numbers are still drawn (and unused), so the crops and the
    order are those a flipping run draws.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        generator: torch.Generator,
        train: bool = True,
        pad_mode: str = "reflect",
        rank: int = 0,
        world: int = 1,
        channels_last: bool = False,
        *,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        flip: bool = True,
    ) -> None:
        self.images, self.labels = images, labels
        self.batch_size, self.generator, self.train = batch_size, generator, train
        self.pad_mode, self.rank, self.world = pad_mode, rank, world
        self.mean, self.std, self.flip = tuple(mean), tuple(std), flip
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __len__(self) -> int:
        n = len(self.images)
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n, device = len(self.images), self.images.device
        # training drops the last partial batch (see __len__), as DataLoader(drop_last=True) would
        order = torch.randperm(n, generator=self.generator) if self.train else torch.arange(n)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = order[start : start + self.batch_size]
            if self.train:
                count = len(index)
                dy = torch.randint(0, 9, (count,), generator=self.generator)
                dx = torch.randint(0, 9, (count,), generator=self.generator)
                flip = (torch.rand(count, generator=self.generator) < 0.5) & self.flip
                mine = slice(self.rank, None, self.world)
                index, dy, dx, flip = index[mine], dy[mine], dx[mine], flip[mine]
                x = self.images[index.to(device)]
                x = augment(x, dy.to(device), dx.to(device), flip.to(device), mode=self.pad_mode)
            else:
                index = index[self.rank :: self.world]
                x = self.images[index.to(device)]
            x = normalize(x, self.mean, self.std).contiguous(memory_format=self.memory_format)
            yield x, self.labels[index.to(device)]


class _TorchvisionImages(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), int(self.labels[i])


def torchvision_loader(
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    train: bool,
    workers: int,
    seed: int,
    *,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    flip: bool = True,
) -> torch.utils.data.DataLoader:
    """The familiar baseline: a DataLoader over per-image torchvision transforms (v2, tensors)."""
    from torchvision.transforms import v2

    side = images.shape[-1]
    steps = [v2.RandomCrop(side, padding=4, padding_mode="reflect")] if train else []
    steps += [v2.RandomHorizontalFlip()] if train and flip else []
    transform = v2.Compose(
        [*steps, v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    )
    return torch.utils.data.DataLoader(
        _TorchvisionImages(images.cpu(), labels.cpu(), transform),
        batch_size=batch_size,
        shuffle=train,
        drop_last=train,
        num_workers=workers,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=workers > 0,
    )
