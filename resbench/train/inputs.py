"""The trainer's data: the dataset read once, padded to the model's side, its batches, and the
checkpoint's record of it.

Images are zero padded to the model's side once, in pixel space (28 -> 32), before the usual crop
and flip; normalisation uses the dataset's own mean and std, and flips only where they suit the
data. The checkpoint's ``data`` record holds the ``Preprocess`` that gives the inputs the trainer's
own test evaluation saw, so ``Preprocess.from_dict(ckpt["data"]["preprocess"]).apply(raw test
images)`` scores the checkpoint as training scored it.
"""

from __future__ import annotations

import dataclasses

import torch

from resbench import cli, data
from resbench.models import default_image_size
from resbench.train.recipe import TrainConfig


def model_input(ds: data.Tensors, model: str) -> tuple[data.Tensors, data.Preprocess]:
    """The dataset with its images zero padded to ``model``'s side (28 -> 32), once, in pixel
    space, and the preprocessing that turns its raw images into the model's input."""
    pre = ds.preprocess(default_image_size(model), ds.channels)
    if pre.resize:
        raise data.DataError(
            f"{ds.name} images are {ds.side}x{ds.side}; the trainer pads images to its model's "
            f"{pre.size}x{pre.size} but does not resize them"
        )
    padded = dataclasses.replace(ds, train_x=pre.pixels(ds.train_x), test_x=pre.pixels(ds.test_x),
                                 side=pre.size)  # fmt: skip
    return padded, pre


def data_record(ds: data.Labelled, pre: data.Preprocess) -> dict:
    """The checkpoint's ``data`` record: what the model was trained on and how its input was made,
    as plain data (``weights_only`` loads it)."""
    return {"dataset": ds.name, "classes": list(ds.classes), "num_classes": len(ds.classes),
            "in_channels": pre.channels, "image_size": pre.size,
            "preprocess": pre.to_dict()}  # fmt: skip


def loaders(cfg: TrainConfig, d: data.Tensors, pre: data.Preprocess, gen: torch.Generator,
            rank: int, world: int, epoch: int):  # fmt: skip
    """The training and test batches: on the device (``--data-loader device``), or through a
    torchvision DataLoader (the baseline)."""
    stats = {"mean": pre.mean, "std": pre.std}
    if cfg.data_loader == "device":
        train_loader = data.DeviceLoader(d.train_x, d.train_y, cfg.batch_size, gen, True,
                                         cfg.pad_mode, rank, world, cfg.channels_last, **stats,
                                         flip=d.flip)  # fmt: skip
        test_loader = data.DeviceLoader(d.test_x, d.test_y, cfg.eval_batch_size, gen, False,
                                        rank=rank, world=world, channels_last=cfg.channels_last,
                                        **stats)  # fmt: skip
        return train_loader, test_loader
    train_loader = data.torchvision_loader(d.train_x, d.train_y, cfg.batch_size // world, True,
                                           cfg.workers, cfg.seed + epoch, **stats,
                                           flip=d.flip)  # fmt: skip
    test_loader = data.torchvision_loader(
        d.test_x, d.test_y, cfg.eval_batch_size, False, cfg.workers, 0, **stats
    )
    return train_loader, test_loader


def load_data(args, cfg: TrainConfig, rank: int, world: int) -> data.Tensors:
    """The dataset as ``cfg.data_dir`` holds it: rank 0 first (it may download and cache), then
    the other ranks; refused when its files say they are another dataset's."""
    check = not args.no_verify
    if rank == 0:
        ds = data.load(cfg.dataset, cfg.data_dir, download=args.download, check=check)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()  # rank 0 downloaded and cached; the others read the cache
    if rank != 0:
        ds = data.load(cfg.dataset, cfg.data_dir, check=check)
    check_dataset(ds, cfg.dataset)
    return ds


def check_dataset(ds: data.Tensors, dataset: str) -> None:
    """A UsageError of one line when the folder read for ``--dataset`` says it holds another
    dataset (``data.detect``: FashionMNIST/raw, a folder named fashion-mnist, ...): MNIST's and
    Fashion-MNIST's idx files have one format, so either loads as the other, and the run, its
    checkpoint and its normalisation would be named for data it never saw. The folder read, not
    ``--data-dir``: torchvision's root may hold several datasets side by side. A folder whose name
    says nothing (a flat folder named for neither) is not refused."""
    try:
        held = data.detect(ds.path, guess=False)
    except data.DataError:  # a layout detect does not name (it was read all the same)
        return
    if held is None or held == dataset:
        return
    said, named = data.DATASETS[held].title, data.DATASETS[dataset].title
    raise cli.UsageError(
        f"--dataset {dataset}, but {ds.path} holds {said}'s files (by its name); train with "
        f"--dataset {held}, or give --data-dir the folder of {named}'s files"
    )
