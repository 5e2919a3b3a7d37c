from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from resbench.engine import devices
from resbench.engine.measure import Config, Result, measure, prepare, validate_config

FAST = {"budget_s": 0.1, "max_warmup_s": 0.1, "peak": False}

DESIGN_FIELDS = [
    "model", "batch_size", "image_size", "device", "mode", "precision", "channels_last", "compile",
    "status", "error", "params", "gflops_per_image", "gflops_per_step", "latency_ms_median",
    "latency_ms_p10", "latency_ms_p90", "latency_ms_p99", "latency_ms_iqr", "iterations",
    "throughput_ips", "tflops_achieved", "mfu", "peak_memory_mb", "compile_time_s", "warmup_s",
    "noisy", "foreign_cpu", "timestamp", "samples_ms",
]  # fmt: skip


def test_config_defaults():
    c = Config("resnet50", 8)
    assert c.image_size == 224 and c.mode == "inference" and c.precision == "fp32"
    assert not c.channels_last and c.compile == "off"
    assert c.device == ("cuda" if torch.cuda.is_available() else c.device)
    assert Config("small_resnet20", 8).image_size == 32
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.batch_size = 4


def test_result_has_every_design_field_and_is_json():
    names = [f.name for f in dataclasses.fields(Result)]
    for name in DESIGN_FIELDS:
        assert name in names
    r = measure(Config("small_resnet20", 4, device="cpu"), **FAST)
    data = json.loads(json.dumps(r.to_dict()))
    assert Result.from_dict(data) == r


def test_inference_result_units_are_consistent():
    r = measure(Config("small_resnet20", 8, device="cpu"), budget_s=0.3, max_warmup_s=0.3)
    assert r.status == "ok", r.error
    assert r.iterations == len(r.samples_ms) >= 3
    assert r.latency_ms_p10 <= r.latency_ms_median <= r.latency_ms_p90 <= r.latency_ms_p99
    assert r.throughput_ips == pytest.approx(8 / (r.latency_ms_median / 1e3))
    assert r.gflops_per_step == pytest.approx(8 * r.gflops_per_image)
    assert r.tflops_achieved == pytest.approx(r.gflops_per_step / r.latency_ms_median)
    if r.peak_exceeded:  # the row beat the probe: flagged, never an MFU above 1
        assert r.mfu is None and r.tflops_achieved > r.peak_tflops
    else:
        assert r.peak_exceeded is False and r.mfu == pytest.approx(
            r.tflops_achieved / r.peak_tflops
        )
    assert r.peak_probe  # which probe gave the peak
    assert r.params == 272_474
    assert r.peak_memory_mb > 0 and r.peak_memory_method
    assert r.warmup_s > 0 and r.compile_time_s == 0.0
    assert r.foreign_cpu >= 0 and isinstance(r.noisy, bool)
    assert r.host_ms_per_iter > 0 and r.threads == torch.get_num_threads()
    assert r.effective_batch_size == 8


def test_a_row_faster_than_its_peak_is_flagged_and_shows_no_mfu():
    config = Config("small_resnet20", 1, device="cpu")
    fast = {"budget_s": 0.05, "max_warmup_s": 0.05}
    beaten = measure(config, peak=1e-9, **fast)  # a peak that every row beats: a probe defect
    assert beaten.status == "ok", beaten.error
    assert beaten.peak_exceeded is True and beaten.mfu is None
    assert beaten.peak_tflops == 1e-9 and beaten.peak_probe == "given to measure()"
    held = measure(config, peak=1e6, peak_probe="mm fake 8x8x8", **fast)
    assert held.peak_exceeded is False and held.peak_probe == "mm fake 8x8x8"
    assert held.mfu == pytest.approx(held.tflops_achieved / 1e6)
    unprobed = measure(config, peak=False, **fast)
    assert unprobed.mfu is unprobed.peak_exceeded is unprobed.peak_probe is None


# what may remain between a runtime row first in its process and the same row after it: its own
# kernels, which the runtime and oneDNN cache for the second (~10 MB here); the runtime's start-up
# (the ONNX exporter, onnxruntime's environment) that the first used to carry was ~130 MB
RUNTIME_MEMORY_TOLERANCE_MB = 25.0


def test_a_runtime_rows_peak_memory_does_not_depend_on_coming_first_in_its_process():
    pytest.importorskip("onnxruntime")
    from resbench.sweep.isolate import Worker

    config = Config("small_resnet20", 1, device="cpu", backend="onnxruntime")
    with Worker(300) as worker:  # a fresh process: nothing of onnxruntime loaded yet
        first, second = [worker.measure(config, 0.05, peak=False, repeats=1) for _ in range(2)]
    assert first.status == second.status == "ok", (first.error, second.error)
    difference = abs(first.peak_memory_mb - second.peak_memory_mb)
    assert difference <= RUNTIME_MEMORY_TOLERANCE_MB, (first.peak_memory_mb, second.peak_memory_mb)


def test_train_step_counts_backward():
    r = measure(Config("small_resnet20", 8, device="cpu", mode="train"), **FAST)
    assert r.status == "ok", r.error
    ratio = r.gflops_per_step / (r.gflops_per_image * 8)
    assert 2.5 < ratio < 3.5


def test_channels_last_and_bf16_run_on_cpu():
    for cfg in (
        Config("small_resnet20", 4, device="cpu", channels_last=True),
        Config("small_resnet20", 2, device="cpu", precision="bf16"),
        Config(
            "small_resnet20", 2, device="cpu", precision="bf16", mode="train", channels_last=True
        ),
    ):
        r = measure(cfg, **FAST)
        assert r.status == "ok", r.error


def test_prepare_places_model_and_input_as_asked():
    with prepare(Config("small_resnet20", 2, device="cpu", channels_last=True)) as p:
        assert p.inputs.is_contiguous(memory_format=torch.channels_last)
        assert p.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
        assert not p.model.training
        assert p.step().shape == (2, 10)
    with prepare(Config("small_resnet20", 2, device="cpu", mode="train")) as p:
        before = p.model.fc.weight.detach().clone()
        p.step()
        assert not torch.equal(before, p.model.fc.weight)  # the optimizer stepped
        assert p.model.fc.weight.grad is None  # zero_grad(set_to_none=True)


@pytest.mark.slow
def test_compile_on_the_smallest_model():
    r = measure(Config("small_resnet20", 2, device="cpu", compile="default"), **FAST)
    assert r.status == "ok", r.error
    assert r.compile_time_s > 0


def _raise_in_forward(exc):
    def forward(self, x):
        raise exc

    return forward


def test_oom_becomes_a_result_and_the_caller_goes_on(monkeypatch):
    from resbench.models import SmallResNet

    monkeypatch.setattr(
        SmallResNet,
        "forward",
        _raise_in_forward(torch.OutOfMemoryError("CUDA out of memory. Tried")),
    )
    oom = measure(Config("small_resnet20", 4, device="cpu"), **FAST)
    assert oom.status == "oom" and "out of memory" in oom.error
    assert oom.latency_ms_median is None and oom.params == 272_474
    monkeypatch.undo()
    ok = measure(Config("small_resnet20", 4, device="cpu"), **FAST)
    assert ok.status == "ok"


def test_cpu_allocation_failure_is_oom(monkeypatch):
    from resbench.models import SmallResNet

    message = "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"
    monkeypatch.setattr(SmallResNet, "forward", _raise_in_forward(RuntimeError(message)))
    assert measure(Config("small_resnet20", 4, device="cpu"), **FAST).status == "oom"


def test_other_runtime_errors_are_status_error(monkeypatch):
    from resbench.models import SmallResNet

    monkeypatch.setattr(SmallResNet, "forward", _raise_in_forward(RuntimeError("kernel exploded")))
    r = measure(Config("small_resnet20", 4, device="cpu"), **FAST)
    assert r.status == "error" and "kernel exploded" in r.error


@pytest.mark.parametrize(
    "config, message",
    [
        (Config("resnet19", 1, device="cpu"), "unknown model 'resnet19'; choose one of: resnet18"),
        (Config("resnet18", 0, device="cpu"), "batch_size must be a positive integer"),
        (Config("resnet18", -2, device="cpu"), "batch_size"),
        (Config("resnet18", 1, image_size=0, device="cpu"), "image_size"),
        (Config("resnet18", 1, device="cpu", precision="fp8"), "unknown precision 'fp8'"),
        (Config("resnet18", 1, device="cpu", compile="fast"), "unknown compile mode 'fast'"),
        (Config("resnet18", 1, device="cpu", mode="eval"), "unknown mode 'eval'"),
        (Config("resnet18", 1, device="cpu", precision="fp16"), "fp16 needs a CUDA or MPS"),
        (Config("resnet18", 1, device="cpu", precision="tf32"), "tf32 is a CUDA"),
        (Config("resnet18", 1, device="tpu"), "unknown device"),
    ],
)
def test_bad_input_is_refused_up_front(config, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        validate_config(config)
    with pytest.raises(ValueError):
        measure(config, **FAST)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error when CUDA is absent")
def test_cuda_asked_for_but_absent():
    with pytest.raises(ValueError, match="CUDA is not available"):
        validate_config(Config("resnet18", 1, device="cuda"))


@pytest.mark.skipif(devices.mps_available(), reason="checks the error when MPS is absent")
def test_mps_asked_for_but_absent():
    with pytest.raises(ValueError, match="MPS is not available"):
        validate_config(Config("resnet18", 1, device="mps"))


def test_global_flags_are_restored():
    before = (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32)
    measure(Config("small_resnet20", 2, device="cpu"), **FAST)
    assert (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32) == before


def test_setting_labels():
    assert Config("resnet18", 1, device="cpu").setting == "fp32"
    c = Config("resnet18", 1, device="cpu", precision="bf16", channels_last=True, compile="default")
    assert c.setting == "bf16+cl+compile"


def test_result_from_older_runs_tolerates_missing_and_extra_fields():
    r = Result.from_dict({"model": "resnet18", "batch_size": 2, "device": "cpu", "retired": 1})
    assert r.status == "ok" and r.image_size == 224 and r.samples_ms == []


def test_an_older_row_with_mfu_above_1_is_flagged_when_loaded():
    row = {"model": "resnet18", "batch_size": 2, "device": "cpu"}  # written before peak_exceeded
    over = Result.from_dict(row | {"mfu": 1.04, "peak_tflops": 0.2, "tflops_achieved": 0.208})
    assert over.peak_exceeded is True and over.mfu is None and over.tflops_achieved == 0.208
    under = Result.from_dict(row | {"mfu": 0.5})
    assert under.peak_exceeded is False and under.mfu == 0.5
    assert Result.from_dict(row).peak_exceeded is None


@pytest.mark.cuda
def test_cuda_events_and_allocator_memory():
    r = measure(Config("resnet18", 8, device="cuda"), budget_s=0.5)
    assert r.status == "ok", r.error
    assert r.peak_memory_method == "cuda_max_memory_allocated"
    # resnet18's weights alone are ~47 MB, activations at batch 8 more
    assert r.peak_memory_mb > 47
    assert r.tf32_cudnn is False and r.cudnn_benchmark is True
    assert r.peak_probe and r.peak_exceeded is False and 0 < r.mfu <= 1
    assert r.host_ms_per_iter >= r.issue_ms_per_iter


@pytest.mark.cuda
def test_fp16_train_with_grad_scaler_on_cuda():
    r = measure(Config("small_resnet20", 64, device="cuda", precision="fp16", mode="train"), **FAST)
    assert r.status == "ok", r.error


@pytest.mark.cuda
def test_real_cuda_oom_is_recorded_and_freed():
    free, _total = torch.cuda.mem_get_info()
    # activations of resnet152 train at this batch exceed any current GPU's memory
    r = measure(Config("resnet152", 4096, device="cuda", mode="train"), **FAST)
    assert r.status == "oom", r.error
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() < 100e6  # the failed Config's tensors were freed
    assert torch.cuda.mem_get_info()[0] > 0.5 * free
    assert measure(Config("resnet18", 8, device="cuda"), **FAST).status == "ok"
