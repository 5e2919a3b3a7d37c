"""Backends and precisions as registry entries: validation, labels, agreement, int8, preparation."""

from __future__ import annotations

import importlib.util
import json
import re

import pytest
import torch

from resbench import cli, settings
from resbench.measure import Config, Result, measure, validate_config

FAST = {"budget_s": 0.1, "peak": False}


def cpu(backend="eager", **kw) -> Config:
    return Config("small_resnet20", 2, device="cpu", backend=backend, **kw)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (cpu("onnxruntime", mode="train"), "backend onnxruntime is inference-only"),
        (cpu("openvino", mode="train"), "backend openvino is inference-only"),
        (cpu("aotinductor", mode="train"), "backend aotinductor is inference-only"),
        (cpu("onnxruntime", channels_last=True), "picks its own layout"),
        (cpu("cudagraphs"), "backend cudagraphs runs on cuda; got cpu"),
        (cpu(precision="int8"), "backend eager runs fp32, tf32, bf16, fp16; got precision int8"),
        (cpu("openvino", precision="int8", mode="train"), "int8 is for inference only"),
        (cpu("onnxruntime", precision="bf16"), "backend onnxruntime runs fp32, int8"),
        (cpu("tensorrt"), "unknown backend 'tensorrt'; choose one of: eager, compile"),
        (cpu("eager", compile="default"), "compile mode 'default' is for backend compile"),
    ],
)
def test_a_setting_a_backend_cannot_run_is_one_clear_error(config, message):
    with pytest.raises(ValueError, match=message):
        validate_config(config)


def test_labels_round_trip_for_every_backend_and_precision():
    for backend in settings.BACKENDS:
        for precision in settings.BACKENDS[backend].precisions:
            config = cpu(backend, precision=precision)
            fields = settings.parse_label(config.setting)
            again = Config("small_resnet20", 2, device="cpu", **fields)
            assert again.key() == config.key(), config.setting
    assert cli.parse_settings("int8+openvino,bf16+cl+compile", "--settings") == [
        {"precision": "int8", "channels_last": False, "backend": "openvino", "compile": "off"},
        {"precision": "bf16", "channels_last": True, "backend": "compile", "compile": "default"},
    ]
    with pytest.raises(cli.UsageError, match="--settings: unknown part 'trt'"):
        cli.parse_settings("fp32+trt", "--settings")


@pytest.mark.parametrize(
    ("label", "message"),
    [
        ("int8+onnxruntime+openvino", "names two backends, 'onnxruntime' and 'openvino'"),
        ("bf16+openvino+compile", "names two backends, 'openvino' and 'compile'"),
        ("fp32+cudagraphs+compile", "names two backends, 'cudagraphs' and 'compile'"),
        ("fp32+compile+onnxruntime", "names two backends, 'compile' and 'onnxruntime'"),
        ("fp32+compile+max-autotune", "names two backends, 'compile' and 'max-autotune'"),
        ("fp32+compile+compile", "names 'compile' twice"),
        ("fp32+cl+cl", "has 'cl' twice"),
        ("bf16+compile+cl", "'cl' comes before the backend: 'bf16+cl+compile'"),
        ("fp32+cl+", "unknown part '' in 'fp32+cl+'"),
    ],
)
def test_a_label_is_a_precision_then_at_most_one_cl_then_at_most_one_backend(label, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        settings.parse_label(label)
    with pytest.raises(cli.UsageError, match=f"--settings: .*{re.escape(message)}"):
        cli.parse_settings(f"fp32,{label}", "--settings")


def test_a_result_written_before_backends_loads_as_eager_or_compile():
    old = {"model": "resnet18", "batch_size": 8, "device": "cpu", "compile": "default"}
    assert Result.from_dict(old).backend == "compile"
    assert Result.from_dict(old | {"compile": "off"}).backend == "eager"
    assert Result.from_dict(old).setting == "fp32+compile"


@pytest.mark.parametrize(
    ("backend", "precision", "tolerance"),
    [("onnxruntime", "fp32", 1e-4), ("openvino", "fp32", 1e-4), ("openvino", "bf16", 0.5)],
)
def test_a_runtime_is_timed_with_its_agreement_and_preparation(backend, precision, tolerance):
    r = measure(cpu(backend, precision=precision), **FAST)
    assert r.status == "ok", r.error
    assert r.backend == backend and r.setting == f"{precision}+{backend}"
    assert r.prepare_s > 0 and r.latency_ms_median > 0
    assert r.max_abs_diff < tolerance and r.top1_agreement == 1.0  # fp32 means fp32 (the hint)
    assert r.max_abs_diff > 0 or precision == "fp32"


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_int8_is_calibrated_on_recorded_generated_batches(backend):
    r = measure(cpu(backend, precision="int8"), **FAST)
    assert r.status == "ok", r.error
    assert r.calibration == "32 generated N(0,1) images, seed 1234, in 16 batch(es) of 2"
    assert 0 < r.max_abs_diff < 1.0 and 0 <= r.top1_agreement <= 1
    assert r.mfu is None  # no int8 matmul probe: no MFU rather than a wrong one


def test_the_baseline_records_no_agreement_with_itself():
    r = measure(cpu(), **FAST)
    assert r.status == "ok" and r.max_abs_diff is None and r.top1_agreement is None


def test_aotinductor_exports_compiles_and_agrees():
    r = measure(Config("small_resnet20", 1, device="cpu", backend="aotinductor"), **FAST)
    assert r.status == "ok", r.error
    assert r.prepare_s > 0 and r.max_abs_diff < 1e-4 and r.top1_agreement == 1.0


def test_a_missing_runtime_is_a_skipped_result_naming_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a)
    )
    r = measure(cpu("openvino"), **FAST)
    assert r.status == "skipped" and "pip install" in r.error and "[deploy]" in r.error
    json.dumps(r.to_dict())  # and it is an ordinary JSON line


@pytest.mark.cuda
def test_cudagraphs_replays_a_captured_step_on_cuda():
    for mode in ("inference", "train"):
        r = measure(
            Config("small_resnet20", 32, device="cuda", backend="cudagraphs", mode=mode), **FAST
        )
        assert r.status == "ok", r.error
        assert r.prepare_s > 0  # the capture


def test_weights_from_a_torchvision_state_dict_reach_the_prepared_model(tmp_path):
    from resbench.measure import prepare
    from resbench.models import build_model

    state = build_model("resnet18").state_dict()
    state["fc.bias"] = torch.full_like(state["fc.bias"], 0.5)  # unlike the He/zero initialisation
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    with prepare(Config("resnet18", 1, device="cpu"), weights=str(path)) as p:
        assert torch.equal(p.model.fc.bias, state["fc.bias"])


def test_sweep_refuses_weights_that_are_not_there(tmp_path, capsys):
    from resbench import sweep

    argv = ["--device", "cpu", "--models", "resnet18", "--weights", str(tmp_path / "none.pth")]
    assert sweep.main(argv) == 2
    assert "--weights: no such file" in capsys.readouterr().err
