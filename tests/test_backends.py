"""Backends and precisions as registry entries: validation, labels, agreement, int8, preparation."""

from __future__ import annotations

import importlib.util
import json
import re

import pytest
import torch

from resbench import cli, env, settings
from resbench.engine import devices, runtimes
from resbench.engine.measure import Config, Result, measure, validate_config

FAST = {"budget_s": 0.1, "max_warmup_s": 0.1, "peak": False}


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
    if backend == "openvino" and runtimes.openvino_lacks(precision):  # a CPU without its units
        assert r.status == "skipped" and r.effective_precision == "fp32", r.error
        return
    assert r.status == "ok", r.error
    assert r.effective_precision == precision and r.compute_kernel  # read back from the runtime
    assert r.backend == backend and r.setting == f"{precision}+{backend}"
    assert r.prepare_s > 0 and r.latency_ms_median > 0
    assert r.max_abs_diff < tolerance and r.top1_agreement == 1.0  # fp32 means fp32 (the hint)
    assert r.max_abs_diff > 0 or precision == "fp32"


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_int8_is_calibrated_on_recorded_generated_batches(backend):
    r = measure(cpu(backend, precision="int8"), **FAST)
    assert r.status == "ok", r.error
    assert r.effective_precision == "int8"  # the session's graph, the compiled model: int8 convs
    assert r.calibration == "32 generated N(0,1) images, seed 1234, in 16 batches of 2"
    assert (r.calibration_method, r.calibration_images) == ("minmax", 32)
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
    from resbench.engine.measure import prepare
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


NO_BF16 = frozenset({"fpu", "sse2", "avx", "avx2", "fma"})  # an AVX2-only host's flags


def test_bf16_openvino_on_a_cpu_without_bf16_is_skipped_before_any_export(monkeypatch):
    monkeypatch.setattr(runtimes, "openvino_capabilities", lambda: ["FP32", "INT8", "BIN"])
    monkeypatch.setattr(runtimes, "export_onnx", lambda t: pytest.fail("exported a refused row"))
    r = measure(cpu("openvino", precision="bf16"), **FAST)
    assert r.status == "skipped" and r.effective_precision == "fp32"
    assert "lists no BF16" in r.error and "FP32, INT8, BIN" in r.error


def test_a_runtime_that_computes_another_precision_than_its_label_is_skipped(monkeypatch):
    # the capabilities say BF16, but the compiled model's convolutions ran in f32 (a hint the
    # plugin overrode): what ran decides, not what was asked
    monkeypatch.setattr(runtimes, "openvino_capabilities", lambda: ["FP32", "BF16", "INT8"])
    monkeypatch.setattr(
        runtimes,
        "openvino_precision",
        lambda compiled: {"effective_precision": "fp32", "compute_kernel": "jit_avx2_FP32"},
    )
    r = measure(cpu("openvino", precision="bf16"), **FAST)
    assert r.status == "skipped" and r.effective_precision == "fp32"
    assert "computed fp32, not bf16" in r.error


class _Op:
    def __init__(self, layer: str, runtime: str, primitive: str) -> None:
        self.info = {"layerType": layer, "runtimePrecision": runtime, "primitiveType": primitive}

    def get_rt_info(self):
        class Value(str):
            def astype(self, kind):
                return str(self)

        return {k: Value(v) for k, v in self.info.items()}


def test_openvino_precision_is_what_most_convolutions_ran_in():
    ops = [_Op("Convolution", "f32", "jit_avx2_FP32")] * 3 + [_Op("Convolution", "bf16", "brg")]
    ops += [_Op("Pooling", "bf16", "ref")] * 5  # not a convolution: not counted

    class Compiled:
        def get_runtime_model(self):
            return type("M", (), {"get_ordered_ops": lambda self: ops})()

    got = runtimes.openvino_precision(Compiled())
    assert got == {"effective_precision": "fp32", "compute_kernel": "jit_avx2_FP32"}
    assert runtimes.conv_precision({"fp32": 2, "bf16": 2}) == "mixed (fp32 x2, bf16 x2)"


def test_torch_bf16_on_a_cpu_without_bf16_units_is_skipped_or_marked_emulated(monkeypatch):
    monkeypatch.setattr(env, "cpu_flags", lambda: NO_BF16)
    r = measure(cpu(precision="bf16"), **FAST)
    assert r.status == "skipped" and r.effective_precision == "bf16-emulated"
    assert "no bf16 units" in r.error and "--allow-emulated" in r.error
    r = measure(cpu(precision="bf16"), **FAST, allow_emulated=True)
    assert r.status == "ok" and r.effective_precision == "bf16-emulated"
    fp32 = measure(cpu(), **FAST)  # fp32 is native everywhere
    assert fp32.status == "ok" and fp32.effective_precision == "fp32"


def test_torch_rows_say_which_kernel_ran_on_this_cpu():
    r = measure(cpu(precision="bf16"), **FAST)
    if devices.emulated(torch.device("cpu"), "bf16"):
        assert r.status == "skipped"
        return
    assert r.status == "ok" and r.effective_precision == "bf16"
    # the row's own commonest kernel (read off its call), not the probe's: they agree on some
    # hosts and not on others (resnet18 b1 fp32 NCHW runs jit, the probe brg_conv_fwd)
    assert (r.compute_kernel is None and r.kernels == env.NATIVE) or r.kernels.startswith(
        f"{r.compute_kernel} "
    )
    ran = env.onednn_convolution(torch.bfloat16)
    # the data type comes from oneDNN's own line (src:bf16), not the kernel's name: on an AMX
    # host the bf16 kernel is "brg_conv_fwd:avx10_1_512_amx", with no "bf16" in it
    assert ran is None or ran[1] == "bf16", ran


# oneDNN's verbose lines for a bf16 and an fp32 convolution, as each kind of host prints them: the
# AMX Xeon's were captured here; the EPYC hosts' are as their committed runs name the kernels
# (results/backends-cpu) in oneDNN 3.x's format, the AVX512-BF16 one also in the older format
HOSTS = {
    "amx": (
        ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8"),
        "onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx10_1_512_amx,"
        "forward_training,src:bf16::blocked:acdb::f0 wei:bf16:a:blocked:AcdB32a2b::f0 "
        "bia:undef::undef::: dst:bf16::blocked:acdb::f0,attr-scratchpad:user,"
        "alg:convolution_direct,mb1_ic32oc32_ih28oh26kh3sh1dh0ph0_iw28ow26kw3sw1dw0pw0,0.207031",
        "bf16",
    ),
    "avx512-bf16": (
        ("avx2", "avx512f", "avx512_bf16", "avx512_vnni"),
        "onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx512_core_bf16,"
        "forward_training,src:bf16::blocked:acdb::f0 wei:bf16:a:blocked:AcdB16b16a2b::f0 "
        "bia:undef::undef::: dst:bf16::blocked:acdb::f0,attr-scratchpad:user,"
        "alg:convolution_direct,mb1_ic32oc32_ih28oh26kh3sh1dh0ph0_iw28ow26kw3sw1dw0pw0,0.06",
        "bf16",
    ),
    "avx512-bf16-onednn2": (
        ("avx2", "avx512f", "avx512_bf16"),
        "onednn_verbose,exec,cpu,convolution,jit_bf16:avx512_core_bf16,forward_training,"
        "src_bf16::blocked:acdb:f0 wei_bf16:a:blocked:AcdB16b16a2b:f0 bia_undef::undef::f0 "
        "dst_bf16::blocked:acdb:f0,,alg:convolution_direct,mb1_ic32oc32_ih28oh26kh3sh1dh0ph0,0.1",
        "bf16",
    ),
    "avx2": (
        ("avx2", "fma"),
        "onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx2,forward_training,"
        "src:f32::blocked:acdb::f0 wei:f32:a:blocked:Acdb8a::f0 bia:undef::undef::: "
        "dst:f32::blocked:acdb::f0,attr-scratchpad:user,alg:convolution_direct,"
        "mb1_ic32oc32_ih28oh26kh3sh1dh0ph0_iw28ow26kw3sw1dw0pw0,0.09",
        "f32",
    ),
}


@pytest.mark.parametrize("host", sorted(HOSTS))
def test_the_kernels_data_type_is_read_from_onednns_line_on_every_kind_of_host(monkeypatch, host):
    flags, line, dtype = HOSTS[host]
    reorder = (
        "onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,src:f32::blocked:acdb::f0 "
        "dst:bf16::blocked:AcdB32a2b::f0,attr-scratchpad:user,,32x32x3x3,0.25"
    )  # a reorder is no convolution, whatever its types
    ((kernel, src),) = env.onednn_convolutions(["onednn_verbose,info,cpu,isa", reorder, line])
    assert src == dtype and kernel == line.split(",convolution,")[1].split(",")[0]
    # the row's precision comes from the CPU's flags: native bf16 on AMX and AVX512-BF16 hosts,
    # emulated (and so skipped) on an AVX2-only one
    monkeypatch.setattr(env, "cpu_flags", lambda: frozenset(flags))
    expected = "bf16-emulated" if host == "avx2" else "bf16"
    assert devices.torch_precision(torch.device("cpu"), "bf16") == expected


@pytest.mark.parametrize(
    ("capability", "precision", "tf32_on", "expected"),
    [
        ((7, 0), "tf32", True, "fp32"),  # Volta: no TF32 tensor cores, whatever the switch says
        ((7, 0), "bf16", False, "bf16-emulated"),
        ((9, 0), "tf32", True, "tf32"),
        ((9, 0), "fp32", False, "fp32"),
        ((9, 0), "fp32", True, "tf32"),  # fp32 with TF32 left on is not fp32
        ((9, 0), "bf16", False, "bf16"),
        ((9, 0), "fp16", False, "fp16"),
    ],
)
def test_cuda_precision_is_read_back_from_the_switches_and_the_hardware(
    monkeypatch, capability, precision, tf32_on, expected
):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(devices, "device_name", lambda device: "a GPU")
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32_on
    try:
        assert devices.torch_precision(torch.device("cuda", 0), precision) == expected
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16", "fp16"])
def test_cuda_rows_record_the_precision_that_ran(precision):
    r = measure(Config("small_resnet20", 8, device="cuda", precision=precision), **FAST)
    assert r.status == "ok", r.error
    assert r.effective_precision == precision


def test_nan_weights_make_an_error_row_that_names_them(tmp_path):
    from resbench.models import build_model

    state = build_model("resnet18").state_dict()
    state["conv1.weight"][0, 0, 0, 0] = float("nan")
    path = tmp_path / "r18_nan.pth"
    torch.save(state, path)
    for backend in ("eager", "onnxruntime"):
        r = measure(Config("resnet18", 1, image_size=64, device="cpu", backend=backend),
                    **FAST, weights=str(path))  # fmt: skip
        assert r.status == "error", (backend, r.status)
        assert "NaN" in r.error and "logits" in r.error


def test_env_names_the_cpu_features_that_decide_its_arithmetic():
    from pathlib import Path

    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    got = env.collect_env()
    assert got["cpu_flags"] == [f for f in env.ISA_FLAGS if f in flags]
    assert got["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    bf16_kernel = got["onednn_bf16_kernel"]
    if "avx512_bf16" in flags or "amx_bf16" in flags:
        assert bf16_kernel and ("bf16" in bf16_kernel or "amx" in bf16_kernel)


def test_a_torch_cpu_rows_kernels_are_read_off_one_call_of_the_row_itself():
    # resnet18 b1 fp32 NCHW: 20 convolutions, their kernels counted, and the reorders NCHW costs
    r = measure(Config("resnet18", 1, device="cpu"), **FAST)
    assert r.status == "ok", r.error
    shares = dict(part.rsplit(" ", 1) for part in r.kernels.split(", "))
    assert sum(int(n.split("/")[0]) for n in shares.values()) == 20
    assert all(n.endswith("/20") for n in shares.values())
    assert r.compute_kernel == max(shares, key=lambda k: int(shares[k].split("/")[0]))
    assert r.reorders and r.reorders > 0
    # small_resnet20 at batch 1: PyTorch's heuristic sends its small convolutions to its own
    # kernel, and the row says so instead of naming a oneDNN kernel it never ran
    small = measure(Config("small_resnet20", 1, device="cpu"), **FAST)
    assert small.kernels == env.NATIVE and small.compute_kernel is None


def test_reading_the_kernels_leaves_the_users_onednn_verbose_as_it_was(monkeypatch, capfd):
    x = torch.randn(1, 32, 28, 28).contiguous(memory_format=torch.channels_last)
    w = torch.randn(32, 32, 3, 3).contiguous(memory_format=torch.channels_last)

    def conv():
        return torch.nn.functional.conv2d(x, w)

    monkeypatch.setenv("ONEDNN_VERBOSE", "1")
    try:
        _, lines = env.onednn_log(conv)
        assert any(",convolution," in line for line in lines)
        assert ",convolution," in capfd.readouterr().out  # the user still sees the call's lines
        conv()
        assert ",convolution," in capfd.readouterr().out  # and the log is still on after
    finally:
        torch._C._verbose.mkldnn_set_verbose(0)
    monkeypatch.delenv("ONEDNN_VERBOSE")
    env.onednn_log(conv)
    conv()
    assert ",convolution," not in capfd.readouterr().out  # off, as the user had it
