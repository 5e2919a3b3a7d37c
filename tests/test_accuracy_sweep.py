"""The sweep scores every inference row on labelled images, through the row's own prepared call.

One tiny Fashion-MNIST stand-in (gzipped idx files, as Debian ships them), one short training run
of small_resnet20 on it, and one sweep of that checkpoint: the fp32 eager accuracy is the
trainer's own, int8 calibrates on the training images (and, as its own row, on noise).
"""

from __future__ import annotations

import json
import numpy as np
import pytest
import torch

from resbench import backends, data, evaluate
from resbench.measure import Config, measure, prepare
from resbench.runfolder import read_results
from resbench.sweep import main as sweep_main
from resbench.train import main as train_main

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A flat folder of gzipped idx files, and a small_resnet20 checkpoint trained on it."""
    root = tmp_path_factory.mktemp("acc")
    folder = data.make_synthetic_idx(root / "fashion-mnist", n_train=600, n_test=150, seed=1)
    out = root / "train"
    rc = train_main([
        "--dataset", "fashion-mnist", "--data-dir", str(folder), "--model", "small_resnet20",
        "--epochs", "1", "--batch-size", "100", "--eval-batch-size", "150", "--out", str(out),
        "--no-progress",
    ])  # fmt: skip
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    return folder, out / "checkpoint.pt", summary


def _sweep(tmp_path, *flags) -> tuple[int, list]:
    rc = sweep_main(["--device", "cpu", "--models", "small_resnet20", "--budget", "0.02",
                     "--repeats", "1", "--no-progress", "--out", str(tmp_path / "run"), *flags])  # fmt: skip
    return rc, read_results(tmp_path / "run") if (tmp_path / "run").exists() else []


def _final_test_acc(summary: dict) -> float:
    runs = summary.get("runs") or [summary]
    return runs[0]["final_test_acc"] if "final_test_acc" in runs[0] else runs[0]["test_acc"]


def test_every_row_is_scored_and_fp32_eager_equals_the_trainers_accuracy(trained, tmp_path):
    folder, ckpt, summary = trained
    rc, rows = _sweep(
        tmp_path, "--weights", str(ckpt), "--eval-data", str(folder), "--batch-sizes", "32",
        "--settings", "fp32,int8", "--backends", "eager,onnxruntime",
        "--calibration-data", "train,noise", "--calibration-images", "64",
    )  # fmt: skip
    assert rc == 0
    by = {r.setting: r for r in rows}
    assert set(by) == {"fp32", "fp32+onnxruntime", "int8+onnxruntime", "int8[noise]+onnxruntime"}
    fp32 = by["fp32"]
    assert fp32.eval_images == 150 and fp32.accuracy_drop == 0.0 and fp32.flips_lost == 0
    # 150 test images at batch 32: the last batch of 22 is filled up, its extra outputs dropped
    assert fp32.top1_accuracy * 150 == pytest.approx(round(_final_test_acc(summary) * 150))
    assert fp32.top5_accuracy is not None and fp32.eval_s > 0 and fp32.weights == str(ckpt)
    onnx = by["fp32+onnxruntime"]
    assert abs(onnx.top1_accuracy - fp32.top1_accuracy) <= 1 / 150  # fp32 is fp32: at most a flip
    real, noise = by["int8+onnxruntime"], by["int8[noise]+onnxruntime"]
    assert real.calibration_data == "train" and noise.calibration_data == "noise"
    assert "fashion-mnist train images" in real.calibration and real.calibration_images == 64
    assert "N(0,1)" in noise.calibration
    for r in (real, noise):
        assert r.accuracy_drop == pytest.approx(100 * (fp32.top1_accuracy - r.top1_accuracy))
        assert r.flips_lost - r.flips_gained == round(r.accuracy_drop * 1.5)
        assert 0 <= r.accuracy_drop_p <= 1 and r.kl_divergence >= 0
    record = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert record["indices"] == list(range(150)) and record["spec"]["dataset"] == "fashion-mnist"
    summary_md = (tmp_path / "run" / "summary.md").read_text()
    assert "int8[noise]+onnxruntime" in summary_md and "within" in summary_md


def test_the_accuracy_is_an_independent_computation_of_the_checkpoint(trained):
    folder, ckpt, _ = trained
    ds = data.load("fashion-mnist", folder)
    state = torch.load(ckpt, weights_only=True)
    rule = data.Preprocess.from_dict(state["data"]["preprocess"])
    from resbench.models import build_model

    model = build_model("small_resnet20", num_classes=10, in_channels=1)
    model.load_state_dict(state["model"])
    model.eval()
    with torch.inference_mode():
        mine = (model(rule.apply(ds.test_x)).argmax(1) == ds.test_y).float().mean()
    spec = evaluate.plan(str(folder), images=None, weights=None)
    spec = evaluate.Spec(**(spec.to_dict() | {"preprocess": state["data"]["preprocess"]}))
    r = measure(Config("small_resnet20", 50, device="cpu"), 0.02, peak=False, weights=str(ckpt),
                evaluation=spec.to_dict())  # fmt: skip
    assert r.status == "ok", r.error
    assert r.top1_accuracy == pytest.approx(float(mine))


def test_int8_scales_come_from_the_given_images_not_noise(trained):
    folder, ckpt, _ = trained
    state = torch.load(ckpt, weights_only=True)
    spec = evaluate.Spec(str(folder), "fashion-mnist", 40, calibration_images=32,
                         preprocess=state["data"]["preprocess"])  # fmt: skip
    import onnx
    from onnx import numpy_helper

    scales = {}
    for source in ("train", "noise"):
        config = Config("small_resnet20", 8, device="cpu", precision="int8",
                        backend="onnxruntime", calibration_data=source)  # fmt: skip
        with prepare(config, weights=str(ckpt), evaluation=spec) as p:
            target = backends.Target(p.model, p.inputs, p.labels, p.device, "inference", None,
                                     "int8", workdir=p.scoring and _tmp(), notes={})  # fmt: skip
            target.calibration = p.scoring.calibration(source, "minmax")
            path = backends.quantise_onnx(target, backends.export_onnx(target))
            graph = onnx.load(str(path)).graph
            scales[source] = {
                t.name: numpy_helper.to_array(t) for t in graph.initializer if "scale" in t.name
            }
            assert target.notes["calibration_images"] == (32 if source == "train" else 32)
            said = target.notes["calibration"]
            assert ("fashion-mnist train images" in said) == (source == "train")
    shared = set(scales["train"]) & set(scales["noise"])
    assert shared
    differ = [n for n in shared if not np.allclose(scales["train"][n], scales["noise"][n])]
    assert len(differ) > len(shared) // 4  # activation scales: real pixels are not N(0,1)


def _tmp():
    import tempfile
    from pathlib import Path

    return Path(tempfile.mkdtemp())


@pytest.mark.parametrize(
    "flags, says",
    [
        (["--eval-data", "/no/such/folder"], "no such folder"),
        (["--eval-data", "{empty}"], "--eval-data"),
        (["--eval-data", "{data}", "--models", "resnet18"], "classes"),
        (["--eval-data", "{data}", "--eval-images", "0"], "--eval-images"),
        (["--calibration-data", "train"], "needs --eval-data"),
        (["--eval-data", "{data}", "--calibration-data", "nowhere"], "neither train"),
        (["--eval-data", "{data}", "--max-accuracy-drop", "nan"], "--max-accuracy-drop"),
    ],
)
def test_bad_accuracy_flags_are_one_line_and_exit_2(trained, tmp_path, capsys, flags, says):
    folder, _, _ = trained
    (tmp_path / "empty").mkdir()
    flags = [f.format(data=folder, empty=tmp_path / "empty") for f in flags]
    argv = ["--device", "cpu", "--out", str(tmp_path / "r"), "--budget", "0.02", "--repeats", "1",
            "--no-progress"]  # fmt: skip
    if "--models" not in flags:
        argv += ["--models", "small_resnet20"]
    assert sweep_main(argv + flags) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], lines
    assert not (tmp_path / "r" / "results.jsonl").exists()
