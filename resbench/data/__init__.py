"""Labelled images in: CIFAR-10, MNIST, Fashion-MNIST and ImageFolder trees, one ``load`` for all.

``load(name, path)`` gives a ``Labelled`` (uint8 images by split, their classes, mean and std);
``detect(path)`` names what a folder holds; ``DATASETS`` is each dataset's facts, in one place;
``Labelled.preprocess(size, channels)`` is the documented rule that turns its images into a
model's input (``Preprocess``, recorded in trainer checkpoints). ``DeviceLoader`` augments training
batches on the device; ``torchvision_loader`` is the DataLoader baseline. Modules: ``core``
(``Labelled``, ``Preprocess``), ``catalog`` (``DATASETS``, ``load``, ``detect``), ``cifar``,
``idx``, ``folders`` (one per on-disk format, each with its synthetic writer), ``augment``, ``cli``.
"""

from __future__ import annotations

from resbench.data import cifar, folders, idx
from resbench.data.augment import DeviceLoader, augment, torchvision_loader
from resbench.data.catalog import DATASETS, detect, load
from resbench.data.cifar import make_synthetic
from resbench.data.cli import main
from resbench.data.core import (
    DataError,
    Dataset,
    Labelled,
    Preprocess,
    Tensors,
    fetch_command,
    normalize,
)
from resbench.data.folders import make_synthetic_imagefolder
from resbench.data.idx import make_synthetic_idx

__all__ = [
    "DATASETS",
    "DataError",
    "Dataset",
    "DeviceLoader",
    "Labelled",
    "Preprocess",
    "Tensors",
    "augment",
    "cifar",
    "detect",
    "fetch_command",
    "folders",
    "idx",
    "load",
    "main",
    "make_synthetic",
    "make_synthetic_idx",
    "make_synthetic_imagefolder",
    "normalize",
    "torchvision_loader",
]
