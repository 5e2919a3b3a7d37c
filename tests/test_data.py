from __future__ import annotations

import pickle

import pytest
import torch

from resbench import data


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    data.make_synthetic(root, n_train=500, n_test=100)
    return root


def test_reads_the_official_layout(synthetic):
    cifar = data.load(synthetic, check=False)
    assert cifar.train_x.shape == (500, 3, 32, 32) and cifar.train_x.dtype == torch.uint8
    assert cifar.test_x.shape == (100, 3, 32, 32) and cifar.train_y.dtype == torch.int64
    assert set(cifar.train_y.tolist()) == set(range(10))
    with (synthetic / data.FOLDER / "data_batch_1").open("rb") as f:
        raw = pickle.load(f, encoding="bytes")
    first = torch.tensor(list(raw[b"data"][0]), dtype=torch.uint8).view(3, 32, 32)
    assert torch.equal(cifar.train_x[0], first) and cifar.train_y[0] == raw[b"labels"][0]


def test_decoded_once_then_cached(synthetic, monkeypatch):
    data.load(synthetic, check=False)
    assert (synthetic / data.FOLDER / data.CACHE_FILE).exists()

    def fail(path):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(data, "_read_batch", fail)
    assert len(data.load(synthetic, check=False).train_x) == 500


def test_real_files_are_checked_against_the_official_md5s(synthetic):
    with pytest.raises(
        data.DataError, match=r"does not match the official CIFAR-10 release.*--no-verify"
    ):
        data.load(synthetic, check=True)


def test_missing_data_says_how_to_get_it(tmp_path):
    with pytest.raises(data.DataError, match=r"python -m resbench\.data --data-dir .* --download"):
        data.load(tmp_path)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "shape"])
def test_corrupt_files_are_clear_errors(tmp_path, damage):
    data.make_synthetic(tmp_path, n_train=50, n_test=10)
    path = tmp_path / data.FOLDER / "data_batch_3"
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:500])
    elif damage == "garbage":
        path.write_bytes(b"not a pickle at all")
    else:
        with path.open("wb") as f:
            pickle.dump({b"data": [[1, 2, 3]], b"labels": [1]}, f)
    with pytest.raises(data.DataError, match="data_batch_3"):
        data.load(tmp_path, check=False)


def test_download_uses_torchvisions_downloader_with_the_official_md5(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    calls = []

    def fake(url, root, filename=None, md5=None, **kw):
        calls.append((url, filename, md5))
        data.make_synthetic(root, n_train=20, n_test=10)

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", fake)
    cifar = data.load(tmp_path, download_if_missing=True, check=False)
    assert calls == [(
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a",
    )]  # fmt: skip
    assert len(cifar.train_x) == 20


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


def test_device_loader_draws_a_permutation_and_splits_ranks():
    images = (
        torch.arange(100, dtype=torch.uint8).view(100, 1, 1, 1).expand(100, 3, 32, 32).contiguous()
    )
    labels = torch.arange(100)
    loader = data.DeviceLoader(images, labels, 16, torch.Generator().manual_seed(0))
    seen = torch.cat([y for _, y in loader])
    assert len(loader) == 6 and len(seen) == 96 and len(set(seen.tolist())) == 96
    x, _ = next(iter(loader))
    assert x.dtype == torch.float32 and x.shape == (16, 3, 32, 32)
    ranks = [
        data.DeviceLoader(images, labels, 16, torch.Generator().manual_seed(0), rank=r, world=2)
        for r in range(2)
    ]
    fresh = data.DeviceLoader(images, labels, 16, torch.Generator().manual_seed(0))
    for (_, a), (_, b), (_, whole) in zip(*ranks, fresh, strict=True):
        assert len(a) == len(b) == 8
        assert sorted(torch.cat([a, b]).tolist()) == sorted(whole.tolist())


def test_eval_loader_keeps_order_and_the_last_partial_batch():
    images = torch.zeros(10, 3, 32, 32, dtype=torch.uint8)
    loader = data.DeviceLoader(images, torch.arange(10), 4, torch.Generator(), train=False)
    assert [y.tolist() for _, y in loader] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_torchvision_baseline_loader(synthetic):
    cifar = data.load(synthetic, check=False)
    loader = data.torchvision_loader(cifar.train_x, cifar.train_y, 32, True, workers=0, seed=0)
    x, y = next(iter(loader))
    assert x.shape == (32, 3, 32, 32) and x.dtype == torch.float32 and y.shape == (32,)
    assert -3 < x.mean() < 3


def test_data_command(tmp_path, capsys):
    assert data.main(["--data-dir", str(tmp_path), "--synthetic", "100"]) == 0
    assert data.main(["--data-dir", str(tmp_path), "--no-verify"]) == 0
    assert "100 train" in capsys.readouterr().out
    assert data.main(["--data-dir", str(tmp_path / "none")]) == 2
