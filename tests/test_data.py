from __future__ import annotations

import gzip
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from resbench import data

ROOT = Path(__file__).resolve().parent.parent


def one_line(exc_info) -> str:
    message = str(exc_info.value)
    assert message and "\n" not in message, message
    return message


# ----------------------------------------------------------------------------- CIFAR-10


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    data.make_synthetic(root, n_train=500, n_test=100)
    return root


def test_reads_the_official_layout(synthetic):
    cifar = data.load("cifar10", synthetic, check=False)
    assert isinstance(cifar, data.Labelled) and cifar.name == "cifar10"
    assert cifar.train_x.shape == (500, 3, 32, 32) and cifar.train_x.dtype == torch.uint8
    assert cifar.test_x.shape == (100, 3, 32, 32) and cifar.train_y.dtype == torch.int64
    assert set(cifar.train_y.tolist()) == set(range(10))
    assert (cifar.channels, cifar.side, cifar.flip, cifar.splits()) == (
        3,
        32,
        True,
        ("train", "test"),
    )
    assert cifar.mean == (0.4914, 0.4822, 0.4465) and cifar.classes[0] == "airplane"
    with (synthetic / data.cifar.FOLDER / "data_batch_1").open("rb") as f:
        raw = pickle.load(f, encoding="bytes")
    first = torch.tensor(list(raw[b"data"][0]), dtype=torch.uint8).view(3, 32, 32)
    assert torch.equal(cifar.train_x[0], first) and cifar.train_y[0] == raw[b"labels"][0]
    # the batches folder itself is accepted too
    inner = data.load("cifar10", synthetic / data.cifar.FOLDER, check=False)
    assert torch.equal(inner.test_x, cifar.test_x)


def test_decoded_once_then_cached(synthetic, monkeypatch):
    data.load("cifar10", synthetic, check=False)
    assert (synthetic / data.cifar.FOLDER / data.cifar.CACHE_FILE).exists()

    def fail(path):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(data.cifar, "_read_batch", fail)
    assert len(data.load("cifar10", synthetic, check=False).train_x) == 500


def test_real_files_are_checked_against_the_official_md5s(synthetic):
    with pytest.raises(
        data.DataError, match=r"does not match the official CIFAR-10 release.*--no-verify"
    ):
        data.load("cifar10", synthetic, check=True)


def test_missing_data_says_how_to_get_it(tmp_path):
    with pytest.raises(data.DataError, match=r"python -m resbench\.data --data-dir .* --download"):
        data.load("cifar10", tmp_path)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "shape"])
def test_corrupt_files_are_clear_errors(tmp_path, damage):
    data.make_synthetic(tmp_path, n_train=50, n_test=10)
    path = tmp_path / data.cifar.FOLDER / "data_batch_3"
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:500])
    elif damage == "garbage":
        path.write_bytes(b"not a pickle at all")
    else:
        with path.open("wb") as f:
            pickle.dump({b"data": [[1, 2, 3]], b"labels": [1]}, f)
    with pytest.raises(data.DataError, match="data_batch_3"):
        data.load("cifar10", tmp_path, check=False)


def test_download_uses_torchvisions_downloader_with_the_official_md5(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    calls = []

    def fake(url, root, filename=None, md5=None, **kw):
        calls.append((url, filename, md5))
        data.make_synthetic(root, n_train=20, n_test=10)

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", fake)
    cifar = data.load("cifar10", tmp_path, download=True, check=False)
    assert calls == [(
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a",
    )]  # fmt: skip
    assert len(cifar.train_x) == 20


# ----------------------------------------------------------------------------- augmentation


def test_augment_crops_and_flips():
    x = torch.randint(0, 255, (4, 3, 32, 32), dtype=torch.uint8)
    four, no, yes = (
        torch.full((4,), 4),
        torch.zeros(4, dtype=torch.bool),
        torch.ones(4, dtype=torch.bool),
    )
    assert torch.equal(data.augment(x, four, four, no), x)
    assert torch.equal(data.augment(x, four, four, yes), x.flip(3))
    shifted = data.augment(
        x, torch.zeros(4, dtype=torch.long), torch.full((4,), 8), no, mode="constant"
    )
    assert torch.equal(shifted[:, :, 4:, :28], x[:, :, :28, 4:])
    assert (shifted[:, :, :4] == 0).all()  # zero padding
    reflect = data.augment(x, torch.zeros(4, dtype=torch.long), four, no, mode="reflect")
    assert torch.equal(reflect[:, :, 0], x[:, :, 4])


CIFAR = data.DATASETS["cifar10"]
STATS = {"mean": CIFAR.mean, "std": CIFAR.std}


def test_device_loader_draws_a_permutation_and_splits_ranks():
    images = (
        torch.arange(100, dtype=torch.uint8).view(100, 1, 1, 1).expand(100, 3, 32, 32).contiguous()
    )
    labels = torch.arange(100)
    loader = data.DeviceLoader(images, labels, 16, torch.Generator().manual_seed(0), **STATS)
    seen = torch.cat([y for _, y in loader])
    assert len(loader) == 6 and len(seen) == 96 and len(set(seen.tolist())) == 96
    x, _ = next(iter(loader))
    assert x.dtype == torch.float32 and x.shape == (16, 3, 32, 32)
    ranks = [
        data.DeviceLoader(
            images, labels, 16, torch.Generator().manual_seed(0), rank=r, world=2, **STATS
        )
        for r in range(2)
    ]
    fresh = data.DeviceLoader(images, labels, 16, torch.Generator().manual_seed(0), **STATS)
    for (_, a), (_, b), (_, whole) in zip(*ranks, fresh, strict=True):
        assert len(a) == len(b) == 8
        assert sorted(torch.cat([a, b]).tolist()) == sorted(whole.tolist())


@pytest.mark.parametrize("flip", [True, False])
def test_device_loader_flips_only_where_the_data_allows(flip):
    images = torch.randint(0, 255, (40, 1, 32, 32), dtype=torch.uint8, generator=torch.Generator())
    mean, std = (0.1307,), (0.3081,)
    loader = data.DeviceLoader(images, torch.arange(40), 40, torch.Generator().manual_seed(3),
                               mean=mean, std=std, flip=flip)  # fmt: skip
    x, y = next(iter(loader))
    gen = torch.Generator().manual_seed(3)  # the numbers the loader draws, in its order
    order = torch.randperm(40, generator=gen)
    dy, dx = torch.randint(0, 9, (40,), generator=gen), torch.randint(0, 9, (40,), generator=gen)
    flips = torch.rand(40, generator=gen) < 0.5
    assert flips.any() and torch.equal(y, order)
    expected = data.augment(images[order], dy, dx, flips & flip)
    assert torch.equal(x, data.normalize(expected, mean, std))


def test_eval_loader_keeps_order_and_the_last_partial_batch():
    images = torch.zeros(10, 3, 32, 32, dtype=torch.uint8)
    loader = data.DeviceLoader(images, torch.arange(10), 4, torch.Generator(), train=False, **STATS)
    assert [y.tolist() for _, y in loader] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_torchvision_baseline_loader(synthetic):
    cifar = data.load("cifar10", synthetic, check=False)
    loader = data.torchvision_loader(cifar.train_x, cifar.train_y, 32, True, workers=0, seed=0,
                                     **STATS)  # fmt: skip
    x, y = next(iter(loader))
    assert x.shape == (32, 3, 32, 32) and x.dtype == torch.float32 and y.shape == (32,)
    assert -3 < x.mean() < 3


def test_data_command(tmp_path, capsys):
    assert data.main(["--data-dir", str(tmp_path), "--synthetic", "100"]) == 0
    assert data.main(["--data-dir", str(tmp_path), "--no-verify"]) == 0
    assert "100 train" in capsys.readouterr().out
    assert data.main(["--data-dir", str(tmp_path / "none")]) == 2


# ----------------------------------------------------------------------------- MNIST, Fashion-MNIST


def idx_payload(path: Path) -> np.ndarray:
    """An idx file's data, parsed here from the format's definition (big-endian header)."""
    raw = path.read_bytes()
    raw = gzip.decompress(raw) if path.suffix == ".gz" else raw
    ndim = raw[3]
    dims = np.frombuffer(raw[4 : 4 + 4 * ndim], dtype=">u4")
    return np.frombuffer(raw[4 + 4 * ndim :], dtype=np.uint8).reshape(dims)


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    """Debian's layout: the four .gz files flat in a folder named for the dataset."""
    folder = tmp_path_factory.mktemp("sets") / "fashion-mnist"
    return data.make_synthetic_idx(folder, n_train=60, n_test=20, seed=1)


def test_idx_files_read_byte_for_byte_in_both_layouts(fashion, tmp_path):
    ds = data.load("fashion-mnist", fashion)
    assert isinstance(ds, data.Labelled) and ds.name == "fashion-mnist"
    assert ds.train_x.shape == (60, 1, 28, 28) and ds.train_x.dtype == torch.uint8
    assert ds.test_y.dtype == torch.int64 and ds.count("train") == 60 and ds.count("test") == 20
    images = idx_payload(fashion / "train-images-idx3-ubyte.gz")
    labels = idx_payload(fashion / "t10k-labels-idx1-ubyte.gz")
    assert np.array_equal(ds.train_x[:, 0].numpy(), images)
    assert np.array_equal(ds.test_y.numpy(), labels)
    # torchvision's layout, decompressed (as torchvision leaves it after a download): the same
    raw = data.make_synthetic_idx(tmp_path, n_train=60, n_test=20, seed=1, layout="torchvision",
                                  gzipped=False)  # fmt: skip
    assert raw == tmp_path / "FashionMNIST" / "raw"
    same = data.load("fashion-mnist", tmp_path)
    assert same.path == str(raw)
    for name in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(same, name), getattr(ds, name)), name


def test_dataset_facts_match_torchvision_and_the_published_statistics():
    import torchvision.datasets as tv

    fm, mn = data.DATASETS["fashion-mnist"], data.DATASETS["mnist"]
    assert list(fm.classes) == tv.FashionMNIST.classes and list(mn.classes) == tv.MNIST.classes
    assert (fm.mean, fm.std, fm.flip) == ((0.2860,), (0.3530,), True)
    assert (mn.mean, mn.std, mn.flip) == ((0.1307,), (0.3081,), False)
    assert (fm.channels, fm.side, mn.channels, mn.side) == (1, 28, 1, 28)
    assert data.DATASETS["imagefolder"].mean == (0.485, 0.456, 0.406)


def test_detect_names_every_layout(tmp_path, fashion, synthetic):
    assert data.detect(fashion) == "fashion-mnist"
    assert data.detect(synthetic) == "cifar10"
    assert data.detect(synthetic / data.cifar.FOLDER) == "cifar10"
    digits = data.make_synthetic_idx(tmp_path / "digits", n_train=5, n_test=5)
    assert data.detect(digits) == "mnist"  # a flat folder not named for fashion
    raw = data.make_synthetic_idx(tmp_path / "tv", n_train=5, n_test=5, layout="torchvision",
                                  torchvision_name="MNIST")  # fmt: skip
    assert data.detect(tmp_path / "tv") == "mnist" and data.detect(raw) == "mnist"
    data.make_synthetic_idx(tmp_path / "tvf", n_train=5, n_test=5, layout="torchvision")
    assert data.detect(tmp_path / "tvf") == "fashion-mnist"
    data.make_synthetic_imagefolder(tmp_path / "val", n_classes=2, per_class=1)
    assert data.detect(tmp_path / "val") == "imagefolder"


@pytest.mark.parametrize("where", ["missing", "file", "empty"])
def test_detect_refuses_what_it_cannot_read_in_one_line(tmp_path, where):
    path = tmp_path / "x"
    if where == "file":
        path.write_text("hello")
    elif where == "empty":
        (path / "sub").mkdir(parents=True)
        (path / "sub" / "notes.txt").write_text("no images")
    with pytest.raises(data.DataError) as caught:
        data.detect(path)
    message = one_line(caught)
    assert str(path) in message
    if where == "empty":
        assert "cifar-10-batches-py" in message and "FashionMNIST/raw" in message
        assert "ImageFolder" in message


def test_take_keeps_the_order_of_the_indices(fashion):
    ds = data.load("fashion-mnist", fashion)
    order = torch.tensor([7, 0, 19, 7, 3])
    x, y = ds.take("test", order)
    assert torch.equal(x, ds.test_x[order]) and torch.equal(y, ds.test_y[order])
    assert torch.equal(ds.labels("test"), ds.test_y)
    with pytest.raises(data.DataError, match="outside the 20 images"):
        ds.take("test", torch.tensor([20]))
    with pytest.raises(data.DataError, match="no 'val' split"):
        ds.take("val", order)


def _rewrite(path: Path, payload: bytes) -> None:
    path.write_bytes(gzip.compress(payload))


@pytest.mark.parametrize("damage", ["truncated", "garbage", "count", "missing", "size", "label"])
def test_bad_idx_files_are_one_line_errors(tmp_path, damage):
    folder = data.make_synthetic_idx(tmp_path / "fashion", n_train=30, n_test=10)
    images, labels = folder / "t10k-images-idx3-ubyte.gz", folder / "t10k-labels-idx1-ubyte.gz"
    expect = {"truncated": images.name, "garbage": images.name, "count": "9 labels for the 10",
              "missing": "lacks t10k-labels-idx1-ubyte[.gz]", "size": "32x32 pixels",
              "label": "labels outside 0..9"}[damage]  # fmt: skip
    if damage == "truncated":
        _rewrite(images, gzip.decompress(images.read_bytes())[:-100])
    elif damage == "garbage":
        images.write_bytes(b"\x1f\x8b not really gzip")
    elif damage == "count":
        header = np.array([0x801, 9], dtype=">u4").tobytes()
        _rewrite(labels, header + idx_payload(labels)[:9].tobytes())
    elif damage == "missing":
        labels.unlink()
    elif damage == "size":
        header = np.array([0x803, 10, 32, 32], dtype=">u4").tobytes()
        _rewrite(images, header + bytes(10 * 32 * 32))
    else:
        _rewrite(labels, np.array([0x801, 10], dtype=">u4").tobytes() + bytes([12] * 10))
    with pytest.raises(data.DataError) as caught:
        data.load("fashion-mnist", folder.parent / "fashion")
    assert expect in one_line(caught)


def test_missing_idx_data_says_how_to_fetch_it(tmp_path):
    with pytest.raises(data.DataError) as caught:
        data.load("mnist", tmp_path)
    message = one_line(caught)
    assert (
        "python -m resbench.data --dataset mnist --data-dir" in message and "MNIST/raw" in message
    )


def _fake_torchvision_download(calls: list, source: Path):
    """torchvision's download_and_extract_archive for a .gz, from files in ``source``."""
    from torchvision.datasets.utils import extract_archive

    def fake(url, download_root, filename=None, md5=None, **kw):
        calls.append((url, filename, md5))
        target = Path(download_root) / filename
        target.write_bytes((source / filename).read_bytes())
        extract_archive(str(target), download_root)

    return fake


def test_download_goes_through_torchvisions_dataset_class(tmp_path, monkeypatch):
    import torchvision.datasets as tv
    import torchvision.datasets.mnist as tv_mnist

    source = data.make_synthetic_idx(tmp_path / "source", n_train=20, n_test=10, seed=4)
    calls: list = []
    monkeypatch.setattr(tv_mnist, "download_and_extract_archive",
                        _fake_torchvision_download(calls, source))  # fmt: skip
    ds = data.load("fashion-mnist", tmp_path / "root", download=True)
    assert ds.path == str(tmp_path / "root" / "FashionMNIST" / "raw")
    assert [(c[1], c[2]) for c in calls] == tv.FashionMNIST.resources  # names and md5s
    assert all(c[0].startswith(tv.FashionMNIST.mirrors[0]) for c in calls)
    assert torch.equal(ds.train_x[:, 0], torch.from_numpy(idx_payload(
        source / "train-images-idx3-ubyte.gz").copy()))  # fmt: skip
    calls.clear()
    data.load("fashion-mnist", tmp_path / "root", download=True)
    assert calls == []  # present: not fetched again


def test_a_failed_download_is_one_line(tmp_path, monkeypatch):
    from urllib.error import URLError

    import torchvision.datasets.mnist as tv_mnist

    def offline(url, download_root, filename=None, md5=None, **kw):
        raise URLError("no network here")

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", offline)
    with pytest.raises(data.DataError) as caught:
        data.load("mnist", tmp_path, download=True)
    message = one_line(caught)
    assert "could not download MNIST" in message and "no network here" in message


# ----------------------------------------------------------------------------- ImageFolder


@pytest.fixture(scope="module")
def imagefolder(tmp_path_factory):
    return data.make_synthetic_imagefolder(tmp_path_factory.mktemp("val"), n_classes=3,
                                           per_class=3, side=40)  # fmt: skip


def test_imagefolder_decodes_lazily_as_torchvisions_weights_expect(imagefolder):
    from PIL import Image

    ds = data.load("imagefolder", imagefolder, size=32)
    assert ds.splits() == ("test",) and ds.count("test") == 9 and ds.classes == (
        "class0", "class1", "class2")  # fmt: skip
    assert ds.labels("test").tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert (ds.channels, ds.side, ds.mean, ds.std) == (
        3, 32, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # fmt: skip
    x, y = ds.take("test", torch.tensor([8, 0, 4]))
    assert x.shape == (3, 3, 32, 32) and x.dtype == torch.uint8 and y.tolist() == [2, 0, 1]
    # independently: PIL resize of the shorter side to round(32 * 256 / 224) = 37, centre crop 32
    img = Image.open(imagefolder / "class2" / "2.png").convert("RGB")
    resized = np.asarray(img.resize((37, 37), Image.BILINEAR))
    top = round((37 - 32) / 2)
    expected = torch.from_numpy(resized[top : top + 32, top : top + 32].copy()).permute(2, 0, 1)
    assert torch.equal(x[0], expected)
    assert ds.preprocess(32, 3) == data.Preprocess(ds.mean, ds.std, 3, 32)
    with pytest.raises(data.DataError, match="3-channel images"):
        ds.preprocess(32, 1)


@pytest.mark.parametrize("damage", ["missing", "no-classes", "empty-class", "corrupt"])
def test_bad_imagefolders_are_one_line_errors(tmp_path, damage):
    root = data.make_synthetic_imagefolder(tmp_path / "val", n_classes=2, per_class=1, side=8)
    if damage == "missing":
        root = tmp_path / "nowhere"
    elif damage == "no-classes":
        root = tmp_path / "flat"
        root.mkdir()
        (root / "a.png").write_bytes((tmp_path / "val" / "class0" / "0.png").read_bytes())
    elif damage == "empty-class":
        (root / "class9").mkdir()
    else:
        (root / "class1" / "0.png").write_bytes(b"not a png")
    with pytest.raises(data.DataError) as caught:
        ds = data.load("imagefolder", root, size=8)
        ds.take("test", torch.arange(ds.count("test")))
    message = one_line(caught)
    assert (str(root / "class1" / "0.png") if damage == "corrupt" else str(root)) in message


# ----------------------------------------------------------------------------- Preprocess


@pytest.mark.parametrize(
    "channels, side, size, model_channels, pad, resize",
    [
        (1, 28, 32, 1, 2, False),  # the CIFAR family's input: zero padded
        (1, 28, 32, 3, 2, False),  # repeated to 3 channels, padded
        (1, 28, 36, 1, 4, False),  # 8 short: still padded
        (1, 28, 38, 1, 0, True),  # 10 short: resized
        (1, 28, 31, 1, 0, True),  # an odd difference: resized
        (3, 32, 32, 3, 0, False),  # as is
        (3, 32, 28, 3, 0, True),  # larger than the model's: resized
        (1, 28, 224, 3, 0, True),  # into an ImageNet model: resized
    ],
)
def test_the_preprocessing_rule(channels, side, size, model_channels, pad, resize):
    mean, std = (0.1,) * channels, (0.2,) * channels
    pre = data.core.plan(channels, side, mean, std, size, model_channels)
    assert (pre.pad, pre.resize, pre.channels, pre.size) == (pad, resize, model_channels, size)
    assert pre.mean == (0.1,) * model_channels and pre.std == (0.2,) * model_channels


def test_three_channels_into_one_is_refused(synthetic):
    cifar = data.load("cifar10", synthetic, check=False)
    with pytest.raises(data.DataError) as caught:
        cifar.preprocess(32, 1)
    assert "3-channel images" in one_line(caught) and "in_channels=3" in str(caught.value)
    with pytest.raises(data.DataError, match="cannot feed a 1-channel model"):
        data.Preprocess((0.5,), (0.5,), 1, 32).apply(cifar.test_x[:2])


def test_padding_and_repeating_match_an_independent_computation(fashion):
    ds = data.load("fashion-mnist", fashion)
    raw = ds.test_x[:5]
    pre = ds.preprocess(32, 3)
    got = pre.apply(raw)
    assert got.shape == (5, 3, 32, 32) and got.dtype == torch.float32
    padded = np.pad(raw.numpy().astype(np.float32) / 255, ((0, 0), (0, 0), (2, 2), (2, 2)))
    expected = (np.repeat(padded, 3, axis=1) - 0.2860) / 0.3530
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6, atol=1e-6)
    assert pre.apply(raw, torch.float64).dtype == torch.float64


def test_resizing_matches_torchvision(fashion):
    from torchvision.transforms.v2 import functional as TF

    ds = data.load("fashion-mnist", fashion)
    raw = ds.test_x[:3]
    pre = ds.preprocess(64, 1)
    assert pre.resize and pre.pad == 0
    expected = TF.resize(raw.float() / 255, [64, 64], antialias=True)
    expected = (expected - 0.2860) / 0.3530
    torch.testing.assert_close(pre.apply(raw), expected, rtol=1e-5, atol=1e-5)


def test_preprocess_is_plain_data_that_loads_safely(tmp_path, fashion):
    pre = data.load("fashion-mnist", fashion).preprocess(32, 3)
    record = pre.to_dict()
    assert json.loads(json.dumps(record)) == record
    torch.save({"preprocess": record}, tmp_path / "p.pt")
    again = data.Preprocess.from_dict(
        torch.load(tmp_path / "p.pt", weights_only=True)["preprocess"]
    )
    assert again == pre
    for bad in ({"mean": [0.5]}, {"mean": [0.5], "std": [0.5, 0.1], "channels": 1, "size": 32},
                {"mean": ["x"], "std": [0.5], "channels": 1, "size": 32}):  # fmt: skip
        with pytest.raises(data.DataError) as caught:
            data.Preprocess.from_dict(bad)
        one_line(caught)


def test_an_image_size_the_preprocessing_cannot_give_is_refused():
    pre = data.Preprocess((0.5,), (0.5,), 1, 32, pad=2)
    with pytest.raises(data.DataError) as caught:
        pre.apply(torch.zeros(2, 1, 30, 30, dtype=torch.uint8))
    assert "32x32" in one_line(caught)


# ----------------------------------------------------------------------------- the command


def test_data_command_for_every_format(tmp_path, fashion, imagefolder, capsys):
    assert data.main(["--dataset", "fashion-mnist", "--data-dir", str(fashion)]) == 0
    assert "Fashion-MNIST at" in capsys.readouterr().out
    assert data.main(["--dataset", "mnist", "--data-dir", str(tmp_path), "--synthetic", "30"]) == 0
    assert (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").is_file()
    assert data.main(["--dataset", "mnist", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "MNIST at" in out and "30 train" in out
    assert data.main(["--dataset", "imagefolder", "--data-dir", str(imagefolder)]) == 0
    assert "9 test images" in capsys.readouterr().out
    assert (
        data.main(["--dataset", "imagefolder", "--data-dir", str(imagefolder), "--download"]) == 2
    )
    assert "nothing to fetch" in capsys.readouterr().err


def test_python_m_resbench_data_exits_2_in_one_line(tmp_path):
    bad = data.make_synthetic_idx(tmp_path / "fashion", n_train=10, n_test=5)
    (bad / "train-labels-idx1-ubyte.gz").write_bytes(b"junk")
    done = subprocess.run(
        [sys.executable, "-m", "resbench.data", "--dataset", "fashion-mnist", "--data-dir", str(bad)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    err = done.stderr.strip()
    assert len(err.splitlines()) == 1 and "train-labels-idx1-ubyte.gz" in err
