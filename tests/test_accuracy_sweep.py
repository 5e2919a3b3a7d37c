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

from resbench import data, weights
from resbench.engine import backends, evaluate, runtimes
from resbench.engine.measure import Config, measure
from resbench.models import build_model
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
        "--epochs", "1", "--batch-size", "100", "--lr", "0.05", "--out", str(out), "--no-progress",
    ])  # fmt: skip
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    return folder, out / "checkpoint.pt", summary


def _sweep(tmp_path, *flags) -> tuple[int, list]:
    # one fork, in this process: the scoring is fork 0's (tests/test_forks.py tests the others)
    rc = sweep_main(["--device", "cpu", "--models", "small_resnet20", "--budget", "0.02",
                     "--repeats", "1", "--forks", "1", "--no-progress", "--out",
                     str(tmp_path / "run"), *flags])  # fmt: skip
    return rc, read_results(tmp_path / "run") if (tmp_path / "run").exists() else []


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
    # 150 test images at batch 32: the last batch of 22 is filled up, its extra outputs dropped;
    # the trainer scored them in one batch of 150, so float rounding may move one borderline image
    trainer = round(summary["final_test_acc"] * 150)
    assert abs(round(fp32.top1_accuracy * 150) - trainer) <= 1
    assert fp32.top5_accuracy is not None and fp32.eval_s > 0 and fp32.weights == str(ckpt)
    onnx = by["fp32+onnxruntime"]
    assert abs(onnx.top1_accuracy - fp32.top1_accuracy) <= 1 / 150  # fp32 is fp32: at most a flip
    real, noise = by["int8+onnxruntime"], by["int8[noise]+onnxruntime"]
    assert real.calibration_data == "train" and noise.calibration_data == "noise"
    assert "fashion-mnist train images" in real.calibration and real.calibration_images == 64
    assert "N(0,1)" in noise.calibration
    for r in (real, noise, onnx):
        # agreement with fp32 eager on the labelled images, not on N(0,1) inputs: every flip
        # (right in one, wrong in the other) is a disagreement, so the top-1 agreement is at most
        # what the flips leave
        assert r.agreement_inputs == f"150 images of {folder}"
        assert r.top1_agreement <= 1 - (r.flips_lost + r.flips_gained) / 150 + 1e-9
        assert r.max_abs_diff >= 0
    assert fp32.agreement_inputs is None and fp32.max_abs_diff is None
    for r in (real, noise):
        assert r.accuracy_drop == pytest.approx(100 * (fp32.top1_accuracy - r.top1_accuracy))
        # the flips count untied images; an int8 model's quantised logits tie, and a tied image
        # moves the drop by at most one image without flipping
        assert abs(r.flips_lost - r.flips_gained - r.accuracy_drop * 1.5) <= r.top1_ties + 1e-9
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
    model = build_model("small_resnet20", num_classes=10, in_channels=1)
    model.load_state_dict(state["model"])
    model.eval()
    with torch.inference_mode():  # at the row's batch size, 50
        x = rule.apply(ds.test_x)
        mine = sum(int((model(x[i : i + 50]).argmax(1) == ds.test_y[i : i + 50]).sum())
                   for i in range(0, 150, 50)) / 150  # fmt: skip
    spec = evaluate.plan(str(folder), images=None, weights=None)
    spec = evaluate.Spec(**(spec.to_dict() | {"preprocess": state["data"]["preprocess"]}))
    r = measure(Config("small_resnet20", 50, device="cpu"), 0.02, peak=False, weights=str(ckpt),
                evaluation=spec.to_dict())  # fmt: skip
    assert r.status == "ok", r.error
    assert r.top1_accuracy == pytest.approx(float(mine))


def test_int8_scales_come_from_the_given_images_not_noise(trained, tmp_path):
    import onnx
    from onnx import numpy_helper

    folder, ckpt, _ = trained
    w = weights.read(ckpt)
    spec = evaluate.Spec(str(folder), "fashion-mnist", 40, calibration_images=32,
                         preprocess=w.data["preprocess"])  # fmt: skip
    scoring = evaluate.Scoring(spec, 32, 1)
    model = build_model("small_resnet20", **w.overrides())
    weights.load_into(model, w)
    model.eval()
    scales = {}
    for source in ("train", "noise"):
        (tmp_path / source).mkdir()
        t = backends.Target(model, torch.randn(8, 1, 32, 32), torch.zeros(8, dtype=torch.long),
                            torch.device("cpu"), "inference", None, "int8",
                            workdir=tmp_path / source)  # fmt: skip
        t.calibration = scoring.calibration(source, "minmax")
        graph = onnx.load(str(runtimes.quantise_onnx(t, runtimes.export_onnx(t)))).graph
        scales[source] = {
            i.name: numpy_helper.to_array(i) for i in graph.initializer if "scale" in i.name
        }
        assert t.notes["calibration_images"] == 32
        said = t.notes["calibration"]
        assert ("fashion-mnist train images" in said) == (source == "train"), said
        assert ("N(0,1)" in said) == (source == "noise"), said
    shared = set(scales["train"]) & set(scales["noise"])
    differ = [n for n in shared if not np.allclose(scales["train"][n], scales["noise"][n])]
    assert shared and len(differ) > len(shared) // 4  # activation ranges: pixels are not N(0,1)
    # and none of the calibration images is an evaluated one
    cal = scoring.calibration("train", "minmax")
    assert cal is not None and len(cal.images) == 32


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
        # He-initialised weights score chance: no "fastest within the bound" among them
        (["--eval-data", "{data}"], "without --weights every model is He-initialised"),
        # the checkpoint's recorded preprocessing makes 32x32 inputs, not 64x64
        (["--eval-data", "{data}", "--weights", "{ckpt}", "--image-size", "64"], "1x32x32"),
    ],
)
def test_bad_accuracy_flags_are_one_line_and_exit_2(trained, tmp_path, capsys, flags, says):
    folder, ckpt, _ = trained
    (tmp_path / "empty").mkdir()
    flags = [f.format(data=folder, empty=tmp_path / "empty", ckpt=ckpt) for f in flags]
    argv = ["--device", "cpu", "--out", str(tmp_path / "r"), "--budget", "0.02", "--repeats", "1",
            "--no-progress"]  # fmt: skip
    if "--models" not in flags:
        argv += ["--models", "small_resnet20"]
    assert sweep_main(argv + flags) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], lines
    assert not (tmp_path / "r" / "results.jsonl").exists()


def test_pytorch_int8_is_scored_and_equals_an_independent_quantisation(trained):
    # the row (calibrated on the checkpoint's training images, scored on its test images) against
    # PT2E done here, by hand, from the same calibration images, then Inductor with freezing
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86

    folder, ckpt, _ = trained
    state = torch.load(ckpt, weights_only=True)
    spec = evaluate.plan(str(folder), images=None, weights=None)
    spec = evaluate.Spec(**(spec.to_dict() | {"preprocess": state["data"]["preprocess"]}))
    config = Config("small_resnet20", 50, device="cpu", precision="int8", backend="compile",
                    calibration_data="train")  # fmt: skip
    r = measure(config, 0.02, peak=False, weights=str(ckpt), evaluation=spec.to_dict())
    assert r.status == "ok", r.error
    # oneDNN's log of the row's own call: u8 sources in its convolutions, whatever the label says
    assert r.effective_precision == "int8" and r.setting == "int8+compile" and r.compute_kernel
    assert r.inductor_options == {"freezing": True} and r.prepare_s > 0 and r.mfu is None
    assert "fashion-mnist train images" in r.calibration and r.eval_images == 150
    assert r.calibration_method == "histogram"  # X86InductorQuantizer's default observer

    model = build_model("small_resnet20", num_classes=10, in_channels=1)
    model.load_state_dict(state["model"])
    model.eval()
    cal = evaluate.Scoring(spec, 32, 1).calibration("train", "minmax", 50)
    images = torch.cat([cal.images, cal.images[: -len(cal.images) % 50]])  # whole batches
    assert r.calibration_images == len(images)
    ds = data.load("fashion-mnist", folder)
    x = data.Preprocess.from_dict(state["data"]["preprocess"]).apply(ds.test_x)
    with torch.no_grad():
        graph = torch.export.export(model, (x[:50],), strict=True).module()
        quantizer = x86.X86InductorQuantizer()
        quantizer.set_global(x86.get_default_x86_inductor_quantization_config())
        prepared = prepare_pt2e(graph, quantizer)
        for batch in images.split(50):
            prepared(batch)
        compiled = torch.compile(convert_pt2e(prepared), dynamic=False)
    with torch._inductor.config.patch(freezing=True), torch.inference_mode():
        right = sum(int((compiled(x[i : i + 50]).argmax(1) == ds.test_y[i : i + 50]).sum())
                    for i in range(0, 150, 50))  # fmt: skip
    assert r.top1_accuracy == pytest.approx(right / 150)
