"""PyTorch's own fastest paths (issue 33): Inductor's freezing on the compile and aotinductor
backends, and int8 through PT2E (torchao's X86InductorQuantizer) lowered by Inductor."""

from __future__ import annotations

import importlib.util
import re

import pytest
import torch
import torch.nn.functional as F

from resbench import settings, sweep
from resbench.engine import backends, pt2e
from resbench.engine.measure import Config, Result, measure, prepare, validate_config

FAST = {"budget_s": 0.05, "max_warmup_s": 0.05, "peak": False}


def cpu(backend="compile", **kw) -> Config:
    return Config("small_resnet20", 2, device="cpu", backend=backend, **kw)


@pytest.mark.parametrize(
    ("label", "fields", "cpu_label", "cuda_label"),
    [
        ("bf16+cl+compile", {}, "bf16+cl+compile", "bf16+cl+compile"),
        ("bf16+cl+compile+nofreeze", {"freezing": False}, "bf16+cl+compile+nofreeze",
         "bf16+cl+compile"),
        ("fp32+aotinductor+freeze", {"freezing": True}, "fp32+aotinductor",
         "fp32+aotinductor+freeze"),
        ("int8+compile", {}, "int8+compile", None),
        ("int8+aotinductor+nofreeze", {"freezing": False}, "int8+aotinductor+nofreeze", None),
    ],
)  # fmt: skip
def test_a_freezing_mark_is_said_only_where_it_differs_from_the_default(
    label, fields, cpu_label, cuda_label
):
    parsed = settings.parse_label(label)
    assert {k: v for k, v in parsed.items() if k == "freezing"} == fields
    assert Config("small_resnet20", 2, device="cpu", **parsed).setting == cpu_label
    if cuda_label is not None:  # CUDA rows do not freeze unless asked
        assert Config("small_resnet20", 2, device="cuda", **parsed).setting == cuda_label
    again = settings.parse_label(cpu_label)
    assert Config("small_resnet20", 2, device="cpu", **again).key() == (
        Config("small_resnet20", 2, device="cpu", **parsed).key()
    )


@pytest.mark.parametrize(
    ("label", "message"),
    [
        ("fp32+nofreeze", "'nofreeze' follows an Inductor backend (compile, aotinductor)"),
        ("fp32+openvino+nofreeze", "'nofreeze' follows an Inductor backend"),
        ("fp32+compile+nofreeze+cl", "'cl' comes after the freezing mark"),
        ("fp32+compile+freeze+nofreeze", "'nofreeze' comes after the freezing mark"),
        ("int8+compile+bogus", "unknown part 'bogus'"),
    ],
)
def test_a_bad_freezing_mark_is_one_line_and_exit_2(label, message, capsys):
    with pytest.raises(ValueError, match=re.escape(message)):
        settings.parse_label(label)
    argv = ["--device", "cpu", "--models", "small_resnet20", "--settings", label]
    assert sweep.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (cpu(mode="train", freezing=True), "training rows never freeze"),
        (cpu("eager", freezing=True), "freezing is Inductor's (backends compile, aotinductor)"),
        (cpu(precision="int8", mode="train"), "precision int8 is for inference only"),
        (cpu("eager", precision="int8"), "precision int8 runs on backends: compile, aotinductor, "
         "onnxruntime, openvino"),
    ],
)  # fmt: skip
def test_a_setting_freezing_or_pytorch_int8_cannot_run_is_refused(config, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        validate_config(config)


def test_pytorch_int8_on_cuda_is_refused_with_the_reason():
    for backend in ("compile", "aotinductor"):  # the check validate_config makes on a CUDA host
        with pytest.raises(ValueError, match="precision int8 is quantised inference on CPUs"):
            settings.check("cuda", "inference", "int8", backend, False)


def test_a_row_from_before_freezing_was_an_option_says_it_did_not_freeze():
    old = {"model": "resnet18", "batch_size": 8, "device": "cpu", "backend": "compile",
           "compile": "default"}  # fmt: skip
    assert Result.from_dict(old).setting == "fp32+compile+nofreeze"
    assert Result.from_dict(old | {"device": "cuda"}).setting == "fp32+compile"  # as it is now
    assert Result.from_dict(old | {"mode": "train"}).setting == "fp32+compile"
    assert Result.from_dict(old | {"freezing": None}).setting == "fp32+compile"  # written now


@pytest.mark.parametrize(
    ("config", "freezing"),
    [
        (cpu(), True),  # CPU inference freezes by default
        (cpu(freezing=False), False),
        (cpu("aotinductor"), True),
        (cpu(mode="train"), False),  # training never does
    ],
)
def test_the_row_records_the_inductor_options_it_was_prepared_with(config, freezing):
    # the wrap records them; torch.compile compiles in the first call, which this does not make
    if config.backend == "aotinductor":  # its wrap compiles ahead of time: look at the Target
        seen = {}

        def spy(t):
            seen["freezing"] = t.freezing
            return [lambda: None], 0.0

        entry = settings.BACKENDS["aotinductor"]
        original = entry.wrap
        object.__setattr__(entry, "wrap", spy)
        try:
            with prepare(config):
                pass
        finally:
            object.__setattr__(entry, "wrap", original)
        assert seen == {"freezing": freezing} and config.frozen is freezing
        return
    with prepare(config) as p:
        assert p.notes["inductor_options"] == {"freezing": freezing}
    assert config.frozen is freezing


def test_the_precision_is_what_onednn_ran_not_the_label():
    t = backends.Target(torch.nn.Identity(), torch.zeros(1), torch.zeros(1), torch.device("cpu"),
                        "inference", None, "int8")  # fmt: skip
    # the shape env.onednn_convolution probes with: PyTorch hands it to oneDNN
    x = torch.randn(1, 32, 28, 28).contiguous(memory_format=torch.channels_last)
    w = torch.randn(32, 32, 3, 3).contiguous(memory_format=torch.channels_last)
    pt2e.read_back(lambda: F.conv2d(x, w), t)  # an fp32 convolution, whatever the label says
    assert t.notes["effective_precision"] == "fp32"
    with pytest.raises(backends.Unfaithful, match="computed fp32, not int8"):
        from resbench.engine.preparation import check_faithful

        check_faithful(cpu(precision="int8"), t.notes["effective_precision"], False)


def _scales(model: torch.nn.Module, calibration) -> list[float]:
    t = backends.Target(model, torch.randn(4, 3, 32, 32), torch.zeros(4, dtype=torch.long),
                        torch.device("cpu"), "inference", None, "int8")  # fmt: skip
    t.calibration = calibration
    graph = pt2e.quantise(t)
    return [
        float(n.args[1])
        for n in graph.graph.nodes
        if n.op == "call_function" and "quantize_per_tensor" in str(n.target)
        and isinstance(n.args[1], float)
    ]  # fmt: skip


def test_int8_scales_come_from_the_calibration_images_not_noise():
    from resbench.models import build_model

    torch.manual_seed(0)
    model = build_model("small_resnet20").eval()
    pixels = torch.rand(8, 3, 32, 32) * 0.5  # image-like: in [0, 0.5), unlike N(0,1)
    given = backends.Calibration(pixels, "8 test images")
    noise, images = _scales(model, None), _scales(model, given)
    assert noise and len(noise) == len(images)
    differ = [a for a, b in zip(noise, images, strict=True) if abs(a - b) > 1e-6 * abs(a)]
    assert len(differ) > len(noise) // 2


def test_without_torchao_the_pytorch_int8_rows_are_skipped_naming_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torchao" else real(name, *a)
    )
    for backend in ("compile", "aotinductor"):
        r = measure(cpu(backend, precision="int8"), **FAST)
        assert r.status == "skipped", r.error
        assert "torchao" in r.error and "pip install 'resbench[deploy]'" in r.error
    assert measure(cpu("eager"), **FAST).status == "ok"  # fp32 needs nothing


def test_a_model_that_fails_to_export_is_an_error_row_naming_the_stage(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a guard on a data-dependent branch")

    monkeypatch.setattr(torch.export, "export", broken)
    r = measure(cpu(precision="int8"), **FAST)
    assert r.status == "error"
    assert "PyTorch int8 (PT2E): torch.export (strict) failed" in r.error
    assert "data-dependent" in r.error


def test_off_x86_the_pytorch_int8_row_is_skipped_with_the_reason(monkeypatch):
    import platform

    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    r = measure(cpu(precision="int8"), **FAST)
    assert r.status == "skipped" and "this CPU is aarch64" in r.error, r.error
