"""The trainer's --dataset: Fashion-MNIST and MNIST from their idx files, and the checkpoint's data
record that lets a scorer feed the model exactly what training fed it (issue 20)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from resbench import data, runfolder, train
from resbench.models import build_model


def run(data_dir: Path, out: Path, *extra: str) -> int:
    return train.main(
        ["--data-dir", str(data_dir), "--device", "cpu", "--model", "small_resnet20", "--batch-size",
         "32", "--lr", "0.05", "--epochs", "1", "--out", str(out), "--no-progress", *extra]
    )  # fmt: skip


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.fixture(scope="module")
def fashion(tmp_path_factory) -> Path:
    """Debian's layout: four gzipped idx files flat in a folder named for the dataset."""
    folder = tmp_path_factory.mktemp("sets") / "fashion-mnist"
    return data.make_synthetic_idx(folder, n_train=128, n_test=64, seed=7)


def test_the_checkpoint_scores_its_test_split_as_the_trainer_did(fashion, tmp_path):
    assert run(fashion, tmp_path, "--dataset", "fashion-mnist") == 0
    ckpt = torch.load(tmp_path / train.CHECKPOINT, weights_only=True)
    record = ckpt["data"]
    assert {k: v for k, v in record.items() if k != "preprocess"} == {
        "dataset": "fashion-mnist", "classes": list(data.DATASETS["fashion-mnist"].classes),
        "num_classes": 10, "in_channels": 1, "image_size": 32,
    }  # fmt: skip
    assert record["preprocess"] == {"mean": [0.2860], "std": [0.3530], "channels": 1, "size": 32,
                                    "pad": 2, "resize": False}  # fmt: skip
    assert ckpt["model"]["conv1.weight"].shape[1] == 1  # trained on the data's own channel
    # scored independently: fp32 eager on the raw test images through the recorded preprocessing
    model = build_model("small_resnet20", num_classes=record["num_classes"],
                        in_channels=record["in_channels"])  # fmt: skip
    model.load_state_dict(ckpt["model"])
    model.eval()
    ds = data.load("fashion-mnist", fashion)
    with torch.inference_mode():
        logits = model(data.Preprocess.from_dict(record["preprocess"]).apply(ds.test_x))
        # the check can tell: padding with the mean (not with black pixels) moves the logits
        wrong = model(torch.nn.functional.pad(data.normalize(ds.test_x, (0.2860,), (0.3530,)),
                                              (2, 2, 2, 2)))  # fmt: skip
    assert not torch.allclose(logits, wrong)
    correct = int((logits.argmax(1) == ds.test_y).sum())
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert correct == round(summary["final_test_acc"] * len(ds.test_y))
    # and the test loss, which any other input would move (the count alone is coarse after 1 epoch)
    last = json.loads((tmp_path / train.LOG_FILE).read_text().splitlines()[-1])
    loss = torch.nn.functional.cross_entropy(logits, ds.test_y).item()
    assert loss == pytest.approx(last["test_loss"], rel=1e-5)
    assert summary["dataset"] == "fashion-mnist"
    assert "# Training small_resnet20 on Fashion-MNIST" in (tmp_path / "summary.md").read_text()


def test_mnist_downloads_through_torchvision_and_never_flips(tmp_path, monkeypatch):
    import torchvision.datasets as tv
    import torchvision.datasets.mnist as tv_mnist
    from torchvision.datasets.utils import extract_archive

    source = data.make_synthetic_idx(tmp_path / "source", n_train=64, n_test=32, seed=2)
    fetched = []

    def fake(url, download_root, filename=None, md5=None, **kw):  # torchvision's, offline
        fetched.append(filename)
        (Path(download_root) / filename).write_bytes((source / filename).read_bytes())
        extract_archive(str(Path(download_root) / filename), download_root)

    flips = []

    class Spy(data.DeviceLoader):
        def __init__(self, *args, **kwargs):
            train = args[4] if len(args) > 4 else kwargs.get("train", True)
            flips.append((train, kwargs.get("flip", True)))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", fake)
    monkeypatch.setattr(data, "DeviceLoader", Spy)
    assert run(tmp_path / "root", tmp_path / "out", "--dataset", "mnist", "--download") == 0
    assert fetched == [name for name, _ in tv.MNIST.resources]
    assert (tmp_path / "root" / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file()
    assert (True, False) in flips  # the training loader: digits are not flipped
    ckpt = torch.load(tmp_path / "out" / train.CHECKPOINT, weights_only=True)
    assert ckpt["data"]["dataset"] == "mnist" and ckpt["data"]["preprocess"]["mean"] == [0.1307]
    assert ckpt["config"]["dataset"] == "mnist"


@pytest.mark.parametrize(
    "where, argv, message",
    [
        ("nothing", ["--dataset", "fashion-mnist"],
         "python -m resbench.data --dataset fashion-mnist --data-dir"),
        ("corrupt", ["--dataset", "fashion-mnist"], "t10k-images-idx3-ubyte.gz is truncated"),
        ("labels", ["--dataset", "fashion-mnist"], "holds 9 labels for the 10 images"),
        ("fashion", ["--dataset", "imagefolder"], "argument --dataset: invalid choice"),
    ],
)  # fmt: skip
def test_bad_data_exits_2_in_one_line(tmp_path, capsys, where, argv, message):
    folder = tmp_path / where
    if where != "nothing":
        data.make_synthetic_idx(folder, n_train=40, n_test=10)
    if where == "corrupt":
        (folder / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    elif where == "labels":
        import gzip

        labels = folder / "t10k-labels-idx1-ubyte.gz"
        raw = gzip.decompress(labels.read_bytes())
        labels.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x09" + raw[8:17]))
    assert run(folder, tmp_path / "out", *argv) == 2
    assert message in one_line(capsys)


def test_a_run_resumes_only_on_its_own_dataset(tmp_path, capsys):
    cifar = tmp_path / "cifar"
    data.make_synthetic(cifar, n_train=64, n_test=32, seed=3)
    out = tmp_path / "run"
    assert run(cifar, out, "--no-verify") == 0
    ckpt = torch.load(out / train.CHECKPOINT, weights_only=True)
    assert ckpt["data"]["dataset"] == "cifar10" and ckpt["data"]["in_channels"] == 3
    assert ckpt["data"]["preprocess"]["pad"] == 0
    assert ckpt["data"]["preprocess"]["mean"] == list(data.DATASETS["cifar10"].mean)
    assert run(cifar, out, "--no-verify", "--resume", "--dataset", "mnist", "--epochs", "2") == 2
    assert "--dataset mnist (recorded: cifar10)" in one_line(capsys)
    # a run written before --dataset existed is a CIFAR-10 run, and resumes as one
    del ckpt["config"]["dataset"]
    torch.save(ckpt, out / train.CHECKPOINT)
    record = json.loads((out / runfolder.RUN_FILE).read_text())
    for invocation in record.get("invocations", []):
        invocation.get("options", {}).pop("dataset", None)
    (out / runfolder.RUN_FILE).write_text(json.dumps(record))
    assert run(cifar, out, "--no-verify", "--resume", "--epochs", "2") == 0
    assert torch.load(out / train.CHECKPOINT, weights_only=True)["state"]["epoch"] == 2


@pytest.mark.parametrize("layout", ["named", "torchvision"])
def test_a_dataset_is_refused_on_files_that_say_they_are_another(fashion, tmp_path, capsys, layout):
    # MNIST's and Fashion-MNIST's idx files have one format: either loads as the other, and the run,
    # its checkpoint and its normalisation would be named for data it never saw
    if layout == "named":  # Debian's flat folder named for Fashion-MNIST, trained as MNIST
        folder, dataset, holds = fashion, "mnist", "Fashion-MNIST"
    else:  # torchvision's own MNIST/raw folder given directly, trained as Fashion-MNIST
        folder = data.make_synthetic_idx(tmp_path / "root", n_train=40, n_test=10,
                                         layout="torchvision", torchvision_name="MNIST")  # fmt: skip
        dataset, holds = "fashion-mnist", "MNIST"
    assert run(folder, tmp_path / "out", "--dataset", dataset) == 2
    said = one_line(capsys)
    assert f"--dataset {dataset}, but {folder} holds {holds}'s files" in said, said
    assert f"--dataset {data.detect(folder)}" in said
    assert not (tmp_path / "out" / train.CHECKPOINT).exists()


def test_a_folder_that_does_not_say_or_holds_both_trains_as_asked(tmp_path, capsys):
    # a flat folder named for neither is only guessed to be MNIST: not a reason to refuse
    plain = data.make_synthetic_idx(tmp_path / "idx", n_train=64, n_test=32, seed=4)
    assert data.detect(plain) == "mnist" and data.detect(plain, guess=False) is None
    assert run(plain, tmp_path / "a", "--dataset", "fashion-mnist") == 0
    # torchvision's root holding both: each dataset's own raw folder is read
    root = tmp_path / "root"
    for name in ("MNIST", "FashionMNIST"):
        data.make_synthetic_idx(root, n_train=64, n_test=32, layout="torchvision",
                                torchvision_name=name)  # fmt: skip
    assert run(root, tmp_path / "b", "--dataset", "mnist") == 0
    assert (
        torch.load(tmp_path / "b" / train.CHECKPOINT, weights_only=True)["data"]["dataset"]
        == "mnist"
    )


def test_resume_reads_the_recorded_data_dir(fashion, tmp_path, monkeypatch, capsys):
    # started with a relative --data-dir, resumed from elsewhere without one: run.json has it
    monkeypatch.chdir(fashion.parent)
    out = tmp_path / "run"
    assert run(Path(fashion.name), out, "--dataset", "fashion-mnist") == 0
    options = runfolder.recorded_options(out)
    assert options["data_dir"] == str(fashion)
    monkeypatch.chdir(tmp_path)  # ./data does not exist here: the default would fail
    argv = ["--resume", "--out", str(out), "--epochs", "2", "--no-progress"]
    assert train.main(argv) == 0, capsys.readouterr().err
    assert torch.load(out / train.CHECKPOINT, weights_only=True)["state"]["epoch"] == 2
    capsys.readouterr()
    # and a --data-dir given on resume is used instead (here: one that holds nothing)
    argv = ["--resume", "--out", str(out), "--epochs", "3", "--data-dir", str(tmp_path / "none")]
    assert train.main(argv) == 2
    assert str(tmp_path / "none") in one_line(capsys)
