"""CIFAR-10 on disk (the official python layout) -> uint8 tensors, checked and cached.

The five ``data_batch_*`` pickles and ``test_batch`` are decoded once into uint8 tensors and cached
next to the data (``resbench-cache.pt``); the trainer then moves them to its device whole (150 MB)
and augments there (``augment.py``). Batches are unpickled with only the types the format uses
(numpy arrays, bytes, lists), so a crafted file cannot run code; keys may be bytes (the official
files) or str (folders written from Python 3), as torchvision accepts. Every file is checked against
torchvision's md5 list of the official release unless ``check=False`` (data you made).
``make_synthetic`` writes a learnable stand-in in the same on-disk format (for tests and machines
without internet): ``python -m resbench.data --data-dir /tmp/fake --synthetic 50000``.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from resbench.data.core import DataError, Dataset, Tensors, fetch_command

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
CACHE_FILE = "resbench-cache.pt"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _md5s() -> dict[str, str]:
    from torchvision.datasets import CIFAR10

    return dict(
        CIFAR10.train_list + CIFAR10.test_list + [[CIFAR10.meta["filename"], CIFAR10.meta["md5"]]]
    )


def download(data_dir: Path) -> None:
    """Fetch and unpack the official archive (with its md5) through torchvision's downloader."""
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import download_and_extract_archive

    if (data_dir / FOLDER / TEST_FILE).exists():
        return
    download_and_extract_archive(
        CIFAR10.url, str(data_dir), filename=CIFAR10.filename, md5=CIFAR10.tgz_md5
    )


def verify(folder: Path) -> None:
    """Check every file against torchvision's md5 list of the official release."""
    from torchvision.datasets.utils import check_integrity

    for name, md5 in _md5s().items():
        if not check_integrity(str(folder / name), md5):
            raise DataError(
                f"{folder / name} does not match the official CIFAR-10 release (md5 {md5}); "
                f"delete the folder and fetch it again ({fetch_command(folder.parent)}), or pass "
                "--no-verify for data you made yourself"
            )


class _BatchUnpickler(pickle.Unpickler):
    """Admits only what a CIFAR batch is made of: dicts, lists, bytes, str, numbers, numpy arrays.

    Anything else (a crafted file that names ``os.system``, say) is refused before it can run.
    """

    ALLOWED = frozenset(
        {
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("_codecs", "encode"),  # how Python 2 pickles spell bytes inside numpy arrays
        }
    )

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"it asks for {module}.{name}, which a CIFAR-10 batch never holds (refused: it could "
            "run code)"
        )


def _entry(entry: dict, *names: str):
    """The first of ``names`` in a batch, under bytes keys (the official files) or str keys."""
    for name in names:
        for key in (name.encode(), name):
            if key in entry:
                return entry[key]
    raise KeyError(names[0])


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with path.open("rb") as f:
            entry = _BatchUnpickler(f, encoding="bytes").load()
        if not isinstance(entry, dict):
            raise TypeError(f"a {type(entry).__name__}, not a dict")
        data = np.asarray(_entry(entry, "data"), dtype=np.uint8)
        labels = np.asarray(_entry(entry, "labels", "fine_labels"), dtype=np.int64)
    except FileNotFoundError:
        raise DataError(f"{path} is missing") from None
    except Exception as exc:  # truncated pickle, wrong type, missing key, a refused global
        raise DataError(
            f"{path} is corrupt or not a CIFAR-10 batch ({type(exc).__name__}: {exc})"
        ) from None
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise DataError(
            f"{path} has data of shape {data.shape} and {len(labels)} labels; expected (N, 3072) and N"
        )
    if labels.min(initial=0) < 0 or labels.max(initial=0) > 9:
        raise DataError(f"{path} has labels outside 0..9")
    return data.reshape(-1, 3, 32, 32), labels


def _fingerprint(folder: Path) -> list:
    missing = [name for name in [*TRAIN_FILES, TEST_FILE] if not (folder / name).is_file()]
    if missing:
        raise DataError(
            f"{folder} lacks {', '.join(missing)}: a CIFAR-10 folder holds {', '.join(TRAIN_FILES)} "
            f"and {TEST_FILE}"
        )
    return [
        (name, (folder / name).stat().st_size, (folder / name).stat().st_mtime_ns)
        for name in [*TRAIN_FILES, TEST_FILE]
    ]


def read(
    spec: Dataset, path: Path, download: bool = False, check: bool = True, size: int | None = None
) -> Tensors:
    """Decode CIFAR-10 from ``path/cifar-10-batches-py`` (or ``path`` being it), cached after the
    first time.

    Args:
        download: fetch the official archive first if the folder is absent.
        check: verify the files against the official md5 list (turn off for data you made).
        size: unused (the images are 32x32); accepted as every reader accepts it.
    """
    data_dir = path.parent if path.name == FOLDER else path
    folder = data_dir / FOLDER
    if not (folder / TEST_FILE).exists():
        if download:
            spec.download(data_dir)
        else:
            raise DataError(
                f"no CIFAR-10 at {folder}: fetch it (170 MB) with {fetch_command(data_dir)}, or "
                "give a folder that holds cifar-10-batches-py/"
            )
    if check:
        verify(folder)
    return spec.labelled(data_dir, *_decoded(folder))


def _decoded(folder: Path) -> tuple[torch.Tensor, ...]:
    """train_x, train_y, test_x, test_y: from the cache when it matches the files, else decoded
    (and the cache written, where the folder is writable)."""
    cache = folder / CACHE_FILE
    fingerprint = _fingerprint(folder)
    names = ("train_x", "train_y", "test_x", "test_y")
    if cache.exists():
        try:
            saved = torch.load(cache, weights_only=True)
            if saved["fingerprint"] == [list(f) for f in fingerprint]:
                return tuple(saved[k] for k in names)
        except Exception:  # a stale or broken cache is rebuilt, never trusted
            pass
    parts = [_read_batch(folder / name) for name in TRAIN_FILES]
    test_x, test_y = _read_batch(folder / TEST_FILE)
    tensors = (
        torch.from_numpy(np.concatenate([p[0] for p in parts])),
        torch.from_numpy(np.concatenate([p[1] for p in parts])),
        torch.from_numpy(test_x),
        torch.from_numpy(test_y),
    )
    tmp = cache.with_suffix(".tmp")
    try:
        torch.save({"fingerprint": [list(f) for f in fingerprint], **dict(zip(names, tensors, strict=True))},
                   tmp)  # fmt: skip
        tmp.replace(cache)
    except OSError:  # a read-only data folder just goes without the cache
        tmp.unlink(missing_ok=True)
    return tensors


# ----------------------------------------------------------------------------- synthetic data


def make_synthetic(
    data_dir: Path | str,
    n_train: int = 5000,
    n_test: int = 1000,
    seed: int = 0,
    noise: float = 40.0,
) -> Path:
    """Write a learnable 10-class stand-in for CIFAR-10 in the official on-disk format.

    Each class is a colour and an oriented stripe pattern at a random phase and position, plus noise,
    so a small ResNet learns it to well over 90% in a few epochs; the files are real pickled batches
    that ``load("cifar10", ..., check=False)`` reads like the real ones.
    """
    rng = np.random.default_rng(seed)
    folder = Path(data_dir) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    palette = rng.uniform(40, 215, size=(10, 3))
    angles = np.linspace(0, np.pi, 10, endpoint=False)
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32)

    def images(n: int) -> tuple[np.ndarray, list[int]]:
        labels = rng.integers(0, 10, size=n)
        phase = rng.uniform(0, 2 * np.pi, size=n)
        freq = 0.45 + 0.1 * (labels % 3)
        proj = (
            xx[None] * np.cos(angles[labels])[:, None, None]
            + yy[None] * np.sin(angles[labels])[:, None, None]
        )
        stripes = np.sin(freq[:, None, None] * proj + phase[:, None, None])  # (n, 32, 32)
        img = (
            palette[labels][:, :, None, None]
            + 50 * stripes[:, None]
            + rng.normal(0, noise, (n, 3, 32, 32))
        )
        return np.clip(img, 0, 255).astype(np.uint8).reshape(n, 3072), labels.tolist()

    per_file = -(-n_train // len(TRAIN_FILES))
    for i, name in enumerate(TRAIN_FILES):
        count = max(0, min(per_file, n_train - i * per_file))
        data, labels = images(count)
        _dump(folder / name, {b"batch_label": f"training batch {i + 1} of 5".encode(), b"labels": labels,
                              b"data": data, b"filenames": [f"{j}.png".encode() for j in range(count)]})  # fmt: skip
    data, labels = images(n_test)
    _dump(folder / TEST_FILE, {b"batch_label": b"testing batch 1 of 1", b"labels": labels, b"data": data,
                               b"filenames": [f"{j}.png".encode() for j in range(n_test)]})  # fmt: skip
    _dump(folder / META_FILE, {b"label_names": [c.encode() for c in CLASSES], b"num_cases_per_batch": per_file,
                               b"num_vis": 3072})  # fmt: skip
    return folder


def _dump(path: Path, obj: dict) -> None:
    with path.open("wb") as f:
        pickle.dump(obj, f, protocol=2)
