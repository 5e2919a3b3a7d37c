from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from resbench import data, train
from resbench.engine import backends

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    data.make_synthetic(root, n_train=1000, n_test=500, seed=1)  # 100% in 5 epochs from 800
    return root


def run(cifar_dir, out, *extra):
    return train.main(
        ["--data-dir", str(cifar_dir), "--no-verify", "--device", "cpu", "--model", "small_resnet20",
         "--batch-size", "64", "--lr", "0.05", "--milestones", "3", "--out", str(out), "--no-progress", *extra]
    )  # fmt: skip


@pytest.fixture(scope="module")
def five_epochs(cifar_dir, tmp_path_factory):
    """One single-process run of the recipe: the 90% check reads it, and the torchrun test
    compares two processes with it."""
    out = tmp_path_factory.mktemp("five")
    assert run(cifar_dir, out, "--epochs", "5", "--target-acc", "0.9") == 0
    return out


def test_it_trains_to_90_percent_in_five_epochs(five_epochs):
    # how long it takes is the trainer's measurement, reported in its files; never a test's verdict
    tmp_path = five_epochs
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["final_test_acc"] >= 0.90
    assert summary["time_to_target"]["0.90"]["train_s"] > 0
    log = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3, 4, 5]
    # MultiStepLR with milestone 3: epochs 1-3 at 0.05, then x0.1
    assert [r["lr"] for r in log] == pytest.approx([0.05, 0.05, 0.05, 0.005, 0.005])
    for r in log:
        assert r["cum_train_s"] >= r["train_s"] > 0 and r["images_per_s"] > 0 and r["eval_s"] > 0
    assert (tmp_path / "train.csv").exists() and (tmp_path / "accuracy_vs_time.png").exists()
    md = (tmp_path / "summary.md").read_text()
    assert "| 90% | 1/1 |" in md and "timed region: training steps only" in md
    assert "**1 run**:" in md and ", 5 epochs," in md


def test_deterministic_resume_ends_with_the_same_weights(cifar_dir, tmp_path):
    small = tmp_path / "data"
    data.make_synthetic(small, n_train=320, n_test=64, seed=2)
    args = ["--deterministic", "--batch-size", "32"]
    assert run(small, tmp_path / "whole", "--epochs", "3", *args) == 0
    assert run(small, tmp_path / "split", "--epochs", "2", *args) == 0
    assert run(small, tmp_path / "split", "--epochs", "3", "--resume", *args) == 0
    a = torch.load(tmp_path / "whole" / train.CHECKPOINT, weights_only=False)
    b = torch.load(tmp_path / "split" / train.CHECKPOINT, weights_only=False)
    assert a["state"]["epoch"] == b["state"]["epoch"] == 3
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert [r["test_acc"] for r in a["state"]["log"]] == [r["test_acc"] for r in b["state"]["log"]]
    assert not torch.are_deterministic_algorithms_enabled()  # the caller's setting is restored


def test_non_finite_loss_stops_with_epoch_and_step_and_keeps_the_last_checkpoint(
    cifar_dir, tmp_path, monkeypatch, capsys
):
    real = backends.F.cross_entropy  # the shared train step's loss
    calls = {"n": 0}
    small = tmp_path / "small"  # epoch 1 and five steps of epoch 2 are all it needs
    data.make_synthetic(small, n_train=640, n_test=64, seed=6)
    steps_per_epoch = 640 // 64

    def poisoned(logits, target, **kw):
        calls["n"] += logits.requires_grad  # training steps only, not evaluation
        loss = real(logits, target, **kw)
        if logits.requires_grad and calls["n"] > steps_per_epoch + 4:  # epoch 2, step 5
            return loss * float("nan")
        return loss

    class FakeF:
        cross_entropy = staticmethod(poisoned)

    monkeypatch.setattr(backends, "F", FakeF)
    assert run(small, tmp_path, "--epochs", "3") == train.EXIT_DIVERGED == 3
    err = capsys.readouterr().err
    assert "non-finite loss at epoch 2, step 5" in err
    ckpt = torch.load(tmp_path / train.CHECKPOINT, weights_only=False)
    assert ckpt["state"]["epoch"] == 1


def test_several_runs_report_mean_and_std(cifar_dir, tmp_path):
    small = tmp_path / "data"
    data.make_synthetic(small, n_train=320, n_test=64, seed=3)
    assert (
        run(small, tmp_path / "runs", "--epochs", "1", "--runs", "2", "--target-acc", "0.01") == 0
    )
    md = (tmp_path / "runs" / "summary.md").read_text()
    assert "**2 runs**" in md and "±" in md and "| 1% | 2/2 |" in md
    assert (tmp_path / "runs" / "seed0" / "train.csv").exists()
    assert (tmp_path / "runs" / "seed1" / "train.csv").exists()


def test_no_progress_prints_one_line_per_epoch(tmp_path, capsys):
    small = tmp_path / "data"
    data.make_synthetic(small, n_train=128, n_test=64, seed=7)
    assert run(small, tmp_path / "quiet", "--epochs", "2") == 0
    out = capsys.readouterr().out.splitlines()
    epochs = [line for line in out if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/2", "2/2"], out
    for line in epochs:  # its training seconds, train loss and test accuracy
        assert re.search(r" [0-9.]+ s  loss [0-9.]+  train [0-9.]+  test [0-9.]+ ", line), line
    assert "over 1 run;" in out[-1]


def test_a_text_file_as_the_checkpoint_is_one_clear_line(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / train.CHECKPOINT).write_text("a\n")  # torch.load read "a" as pickle's APPEND: IndexError
    assert run(tmp_path / "no-data", out, "--resume") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not a checkpoint: torch.save writes" in err, err
    assert "Error:" not in err and "pop from empty list" not in err


def test_torchvision_loader_baseline_runs(cifar_dir, tmp_path):
    small = tmp_path / "data"
    data.make_synthetic(small, n_train=256, n_test=64, seed=4)
    assert (
        run(
            small,
            tmp_path / "tv",
            "--epochs",
            "1",
            "--data-loader",
            "torchvision",
            "--workers",
            "0",
        )
        == 0
    )


def test_the_pre_activated_cifar_models_train(tmp_path, capsys):
    small = tmp_path / "data"
    data.make_synthetic(small, n_train=128, n_test=64, seed=5)
    assert run(small, tmp_path / "pre", "--epochs", "1", "--model", "preact_resnet20") == 0
    state = torch.load(tmp_path / "pre" / train.CHECKPOINT, weights_only=True)["model"]
    assert "final_bn.weight" in state and "bn1.weight" not in state  # the pre-activated network
    with pytest.raises(SystemExit):
        train.main(["--help"])
    assert "preact_resnet164" in capsys.readouterr().out  # the choices come from the registry


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "resnet50"], "--model must be a CIFAR-family model"),
        (["--epochs", "0"], "--epochs must be at least 1 and at most 1000"),
        (["--precision", "fp16"], "fp16 needs a CUDA or MPS device"),
        (["--lr", "-1"], "--lr must be positive"),
        (["--target-acc", "93"], "--target-acc takes accuracies in (0, 1]"),
        (["--milestones", "a"], "--milestones takes positive integers"),
        (["--precision", "int8"], "--precision int8 is for inference only; the trainer trains in"),
    ],
)
def test_bad_flags_exit_2(cifar_dir, tmp_path, argv, message, capsys):
    assert run(cifar_dir, tmp_path, *argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--epochs", "1000000000"],
            "--epochs must be at least 1 and at most 1000; got 1000000000",
        ),
        (["--runs", "1000000000"], "--runs must be at least 1 and at most 100; got 1000000000"),
        (["--workers", "1000000000"], "--workers must be at least 0 and at most 256"),
        (["--seed", "1000000000000"], "--seed must be at least 0 and at most 2147483647"),
    ],
)
def test_count_flags_are_bounded_before_any_data_is_read(tmp_path, argv, message, capsys):
    assert run(tmp_path / "no-data", tmp_path / "out", *argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_precision_offers_only_what_trains_and_its_error_names_real_flags(
    cifar_dir, tmp_path, capsys
):
    help_text = train.build_parser().format_help()
    assert "precision: fp32, tf32, bf16, fp16 (default: fp32)" in help_text
    assert "int8" not in help_text
    assert run(cifar_dir, tmp_path, "--precision", "int8") == 2
    err = capsys.readouterr().err
    named = set(re.findall(r"--[a-z][a-z0-9-]*", err))
    assert named == {"--precision"} and named <= set(re.findall(r"--[a-z][a-z0-9-]*", help_text))


def test_missing_and_corrupt_data_exit_2(tmp_path, capsys):
    assert run(tmp_path / "nothing", tmp_path / "out") == 2
    assert "python -m resbench.data --data-dir" in capsys.readouterr().err
    data.make_synthetic(tmp_path / "bad", n_train=50, n_test=10)
    (tmp_path / "bad" / data.cifar.FOLDER / "test_batch").write_bytes(b"\x80\x02}q")
    assert run(tmp_path / "bad", tmp_path / "out") == 2
    assert "test_batch is corrupt" in capsys.readouterr().err


def test_torchrun_two_processes_match_one(cifar_dir, five_epochs, tmp_path):
    # the single process is the recipe's run above (same flags, same data); five epochs are long
    # enough for BatchNorm's running statistics to settle, so eval accuracy is meaningful
    common = ["-m", "resbench.train", "--data-dir", str(cifar_dir), "--no-verify", "--device", "cpu",
              "--model", "small_resnet20", "--batch-size", "64", "--lr", "0.05", "--epochs", "5",
              "--milestones", "3", "--no-progress"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         *common, "--out", str(tmp_path / "two")],
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    a = json.loads((five_epochs / "summary.json").read_text())
    b = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert json.loads((tmp_path / "two" / "env.json").read_text())["world_size"] == 2
    assert a["final_test_acc"] >= 0.85 and b["final_test_acc"] >= 0.85
    assert abs(a["final_test_acc"] - b["final_test_acc"]) <= 0.03
