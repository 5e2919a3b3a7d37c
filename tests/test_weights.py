"""--weights (issue 20): a torchvision state dict or a trainer checkpoint, read and checked once.

A bad file or a model it does not fit is one line and exit 2 before the first Config, in the sweep,
the profiler and the pytest benchmarks; a checkpoint's data record sets the classes and input
channels, so a 1-channel Fashion-MNIST small_resnet20 loads without extra flags.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from resbench import layerstats, profile, sweep, weights
from resbench.engine import measure
from resbench.engine.measure import Config, Result
from resbench.models import build_model

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--device", "cpu", "--batch-sizes", "1", "--budget", "0.05", "--repeats", "1",
        "--precision", "fp32", "--isolate", "off", "--no-progress"]  # fmt: skip
FASHION = [f"class{i}" for i in range(10)]


def trained(name: str = "small_resnet20", **overrides) -> nn.Module:
    """A network whose values differ from prepare()'s seed-0 initialisation, BN stats included."""
    torch.manual_seed(123)
    model = build_model(name, **overrides)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        model.fc.bias.uniform_(-1, 1)
    return model.eval()


def checkpoint(path: Path, model: nn.Module, name: str, channels: int, classes: int) -> Path:
    """A resbench trainer checkpoint as the trainer writes it, with its data record."""
    record = {"dataset": "fashion-mnist", "classes": FASHION[:classes], "num_classes": classes,
              "in_channels": channels, "image_size": 32,
              "preprocess": {"mean": [0.286], "std": [0.353], "channels": channels, "size": 32,
                             "pad": 2, "resize": False}}  # fmt: skip
    torch.save({"model": model.state_dict(), "optimizer": {}, "state": {"epoch": 1},
                "config": {"model": name, "epochs": 1}, "data": record}, path)  # fmt: skip
    return path


def no_measure(*args, **kwargs):
    pytest.fail("a Config was measured with a --weights file that should have been refused")


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err and "\x1b" not in err, err  # no paragraph, no terminal codes
    return err


# ----------------------------------------------------------------------------- reading


def _empty(p: Path) -> None:
    p.write_bytes(b"")


def _pickled_module(p: Path) -> None:
    torch.save(build_model("small_resnet20"), p)


def _damaged_zip(p: Path) -> None:
    torch.save(build_model("small_resnet20").state_dict(), p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def _a_list(p: Path) -> None:
    torch.save([torch.zeros(2)], p)


def _no_tensors(p: Path) -> None:
    torch.save({"epoch": 3, "lr": 0.1}, p)


BAD_FILES = [
    (None, "no such file"),
    (_empty, "is empty (0 bytes)"),
    (_pickled_module, "holds a pickled resbench.models.networks.SmallResNet, not only tensors"),
    (_damaged_zip, "is not a readable checkpoint (RuntimeError: PytorchStreamReader failed"),
    (_a_list, "is not a checkpoint: it holds a list"),
    (_no_tensors, "is not a state dict ('epoch' is not a tensor"),
]


@pytest.mark.parametrize(("make", "said"), BAD_FILES)
def test_a_bad_weights_file_stops_the_sweep_in_one_line_before_any_config(
    make, said, tmp_path, monkeypatch, capsys
):
    path = tmp_path / "w.pth"
    if make is not None:
        make(path)
    monkeypatch.setattr(sweep.runner, "measure", no_measure)
    out = tmp_path / "run"
    argv = [*TINY, "--models", "small_resnet20", "--weights", str(path), "--out", str(out)]
    assert sweep.main(argv) == 2  # a usage error, not 4 with a resume hint
    err = one_line(capsys)
    assert err.startswith("resbench.sweep: error: --weights: ") and said in err
    assert "resume" not in err
    assert not (out / "results.jsonl").exists()


# text files named .pt: torch.load read each as pickle opcodes ("a" is APPEND, "h" BINGET, ...)
TEXTS = ["a\n", "hello\n", "not a checkpoint\n", "<!DOCTYPE html>\n<html></html>\n"]


@pytest.mark.parametrize("text", TEXTS)
def test_a_text_file_named_pt_is_one_clear_line_wherever_weights_are_read(
    text, tmp_path, monkeypatch, capsys
):
    path = tmp_path / "text.pt"
    path.write_text(text)
    with pytest.raises(ValueError) as caught:
        weights.read(path)
    said = str(caught.value)
    assert said.startswith(f"{path} is not a checkpoint: torch.save writes a zip archive"), said
    assert "Error" not in said and "pickled" not in said and "\n" not in said
    monkeypatch.setattr(sweep.runner, "measure", no_measure)
    argv = [
        *TINY,
        "--models",
        "small_resnet20",
        "--weights",
        str(path),
        "--out",
        str(tmp_path / "r"),
    ]
    assert sweep.main(argv) == 2
    assert one_line(capsys) == f"resbench.sweep: error: --weights: {said}"
    argv = ["--model", "small_resnet20", "--device", "cpu", "--weights", str(path),
            "--out", str(tmp_path / "p")]  # fmt: skip
    assert profile.main(argv) == 2
    assert said in one_line(capsys)
    argv = ["--model", "small_resnet20", "--device", "cpu", "--batch-size", "4", "--checkpoint",
            str(path), "--out", str(tmp_path / "o")]  # fmt: skip
    assert layerstats.main(argv) == 2
    assert said in one_line(capsys)


def test_a_legacy_torch_save_still_loads(tmp_path):
    """Files from before PyTorch 1.6 (a pickle stream, not a zip) are checkpoints too."""
    path = tmp_path / "old.pth"
    torch.save(build_model("small_resnet20").state_dict(), path,
               _use_new_zipfile_serialization=False)  # fmt: skip
    assert weights.read(path).fits("small_resnet20") is None


def test_a_torchvision_state_dict_and_its_wrapping_are_read_with_their_shapes(tmp_path):
    model = trained("resnet18d", num_classes=37, in_channels=1)  # a deep stem: conv1.0.weight
    torch.save(model.state_dict(), tmp_path / "bare.pth")
    torch.save({"state_dict": model.state_dict()}, tmp_path / "wrapped.pth")
    for path in (tmp_path / "bare.pth", tmp_path / "wrapped.pth"):
        w = weights.read(path)
        assert (w.kind, w.model, w.data) == ("torchvision", None, None)
        assert w.overrides() == {"num_classes": 37, "in_channels": 1}
        assert w.fits("resnet18d") is None
        assert "conv1.0.weight" in w.fits("resnet18")  # a 7x7 stem: other names


def test_a_trainer_checkpoint_gives_its_model_classes_channels_and_data_record(tmp_path):
    model = trained(num_classes=7, in_channels=1)
    w = weights.read(checkpoint(tmp_path / "c.pt", model, "small_resnet20", 1, 7))
    assert (w.kind, w.model, w.num_classes, w.in_channels) == ("checkpoint", "small_resnet20", 7, 1)
    assert w.data["dataset"] == "fashion-mnist" and w.data["preprocess"]["pad"] == 2
    assert w.fits("small_resnet20") is None
    assert w.fits("small_resnet32") == "the checkpoint is of small_resnet20"
    # an older checkpoint without a data record: the shapes say the same
    torch.save({"model": model.state_dict(), "config": {"model": "small_resnet20"}}, tmp_path / "o")
    assert weights.read(tmp_path / "o").overrides() == {"num_classes": 7, "in_channels": 1}


def test_fits_builds_on_the_meta_device_and_draws_no_weights(tmp_path, monkeypatch):
    torch.save(build_model("small_resnet20").state_dict(), tmp_path / "sd.pth")
    w = weights.read(tmp_path / "sd.pth")
    monkeypatch.setattr(nn.init, "kaiming_normal_", lambda *a, **k: pytest.fail("drew weights"))
    assert w.fits("small_resnet20") is None
    assert "the file lacks" in w.fits("resnet50")


def test_load_into_is_strict_and_one_line(tmp_path):
    torch.save(build_model("small_resnet20", num_classes=100).state_dict(), tmp_path / "c100.pth")
    w = weights.read(tmp_path / "c100.pth")
    with pytest.raises(ValueError, match=r"fc.weight is 100x64 in the file, 10x64 in SmallResNet"):
        weights.load_into(build_model("small_resnet20"), w)
    model = weights.load_into(build_model("small_resnet20", **w.overrides()), w)
    assert model.fc.out_features == 100


# ----------------------------------------------------------------------------- the sweep


def test_a_cifar_state_dict_is_loaded_into_a_cifar_model_not_ignored(tmp_path, monkeypatch):
    path = tmp_path / "sd.pth"
    torch.save(trained().state_dict(), path)
    given = []

    def record(config, *args, weights=None, **kwargs):
        given.append(weights)
        return Result.for_config(config, latency_ms_median=1.0, throughput_ips=1e3,
                                 samples_ms=[1.0] * 3, weights=weights)  # fmt: skip

    monkeypatch.setattr(sweep.runner, "measure", record)
    monkeypatch.setattr(sweep.runner.report, "finish_run", lambda out, _: {"summary": out})
    argv = [
        *TINY,
        "--models",
        "small_resnet20",
        "--weights",
        str(path),
        "--out",
        str(tmp_path / "r"),
    ]
    assert sweep.main(argv) == 0
    assert given == [str(path)]


def test_weights_that_fit_one_model_of_the_grid_refuse_the_others_by_name(
    tmp_path, monkeypatch, capsys
):
    path = tmp_path / "r18.pth"
    torch.save(build_model("resnet18").state_dict(), path)
    monkeypatch.setattr(sweep.runner, "measure", no_measure)
    argv = [*TINY, "--models", "resnet18,resnet50", "--weights", str(path)]
    assert sweep.main([*argv, "--out", str(tmp_path / "run")]) == 2
    err = one_line(capsys)
    assert f"{path} fits resnet18 but not resnet50 (the file lacks" in err
    assert err.endswith("; sweep them apart")
    assert sweep.main([*TINY, "--models", "resnet50", "--weights", str(path)]) == 2
    assert one_line(capsys).endswith("; it fits resnet18")


def test_a_mismatch_of_classes_or_channels_is_refused_before_any_config(
    tmp_path, monkeypatch, capsys
):
    path = tmp_path / "c.pt"
    checkpoint(path, trained(num_classes=10, in_channels=1), "small_resnet20", 1, 10)
    state = torch.load(path, weights_only=True)
    state["data"]["num_classes"] = 100  # a record that does not match the tensors
    torch.save(state, path)
    monkeypatch.setattr(sweep.runner, "measure", no_measure)
    argv = [*TINY, "--models", "small_resnet20", "--weights", str(path)]
    assert sweep.main([*argv, "--out", str(tmp_path / "run")]) == 2
    assert "fc.weight is 10x64 in the file, 100x64 in small_resnet20" in one_line(capsys)


def test_a_fashion_mnist_checkpoint_sweeps_end_to_end_with_its_own_logits(tmp_path, monkeypatch):
    model = trained(num_classes=10, in_channels=1)
    path = checkpoint(tmp_path / "checkpoint.pt", model, "small_resnet20", 1, 10)
    seen = []
    real = measure.prepare

    @contextlib.contextmanager
    def spy(*args, **kwargs):  # the preparation the sweep measured, kept to compare its logits
        with real(*args, **kwargs) as prepared:
            yield prepared
            seen.append((prepared.inputs.clone(), prepared.output()))

    monkeypatch.setattr(measure, "prepare", spy)
    monkeypatch.setattr(sweep.runner.report, "finish_run", lambda out, _: {"summary": out})
    out = tmp_path / "run"
    argv = [*TINY, "--models", "small_resnet20", "--weights", str(path), "--out", str(out)]
    assert sweep.main(argv) == 0
    (row,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert row["status"] == "ok" and row["weights"] == str(path)
    ((inputs, logits),) = seen
    assert inputs.shape == (1, 1, 32, 32)  # the model's own input channels
    with torch.no_grad():
        torch.testing.assert_close(logits, model(inputs))


# ----------------------------------------------------------------------------- other tools


def test_the_profiler_reads_weights_once_and_refuses_a_mismatch_in_one_line(
    tmp_path, monkeypatch, capsys
):
    path = tmp_path / "c.pt"
    model = trained(num_classes=10, in_channels=1)
    checkpoint(path, model, "small_resnet20", 1, 10)
    argv = ["--model", "small_resnet32", "--device", "cpu", "--weights", str(path)]
    assert profile.main([*argv, "--out", str(tmp_path / "p")]) == 2
    assert "does not fit small_resnet32 (the checkpoint is of small_resnet20)" in one_line(capsys)
    _empty(tmp_path / "e.pt")
    argv = ["--model", "small_resnet20", "--device", "cpu", "--weights", str(tmp_path / "e.pt")]
    assert profile.main([*argv, "--out", str(tmp_path / "p")]) == 2
    assert "--weights: " in one_line(capsys)
    loaded = []
    real = profile.runner.prepare

    @contextlib.contextmanager
    def spy(*args, **kwargs):
        with real(*args, **kwargs) as prepared:
            loaded.append(prepared.model.conv1.weight.detach().clone())
            yield prepared

    monkeypatch.setattr(profile.runner, "prepare", spy)
    argv = ["--model", "small_resnet20", "--device", "cpu", "--batch-size", "1", "--steps", "1",
            "--wait", "0", "--warmup", "0", "--weights", str(path),
            "--out", str(tmp_path / "p")]  # fmt: skip
    assert profile.main(argv) == 0
    assert torch.equal(loaded[0], model.conv1.weight)


def test_the_benchmarks_check_weights_against_every_model_before_collection(tmp_path):
    path = tmp_path / "sd.pth"
    torch.save(build_model("small_resnet20").state_dict(), path)
    spec = SimpleNamespace(
        rb_configs=[
            Config("small_resnet20", 1, device="cpu"),
            Config("small_resnet56", 1, device="cpu"),
        ],
        getoption=lambda name: str(path) if name == "--weights" else None,
    )
    rb = _benchmarks_conftest()
    with pytest.raises(pytest.UsageError, match="fits small_resnet20 but not small_resnet56"):
        rb.benchmark_weights(spec)
    spec.rb_configs = spec.rb_configs[:1]
    assert rb.benchmark_weights(spec).path == str(path)


def _benchmarks_conftest():
    import importlib.util

    spec = importlib.util.spec_from_file_location("rb_conftest", ROOT / "benchmarks/conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pytest_benchmarks_run_a_one_channel_checkpoint(tmp_path):
    path = checkpoint(tmp_path / "c.pt", trained(num_classes=10, in_channels=1), "small_resnet20",
                      1, 10)  # fmt: skip
    cmd = [sys.executable, "-m", "pytest", "benchmarks", "-q", "-p", "no:cacheprovider",
           "--benchmark-disable", "--rb-device", "cpu", "--rb-models", "small_resnet20",
           "--rb-batch-sizes", "1", "--rb-modes", "inference", "--rb-settings", "fp32",
           "--weights", str(path)]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


def test_layerstats_reads_its_checkpoint_through_weights(tmp_path, capsys):
    path = tmp_path / "c.pt"
    torch.save({"model": build_model("small_resnet32").state_dict(),
                "config": {"model": "small_resnet32"}}, path)  # fmt: skip
    argv = ["--model", "small_resnet20", "--device", "cpu", "--batch-size", "4", "--checkpoint",
            str(path), "--out", str(tmp_path / "o")]  # fmt: skip
    assert layerstats.main(argv) == 2
    assert f"--checkpoint {path} holds small_resnet32, not small_resnet20" in one_line(capsys)
    _pickled_module(path)
    assert layerstats.main(argv) == 2
    assert "holds a pickled resbench.models.networks.SmallResNet" in one_line(capsys)
