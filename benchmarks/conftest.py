"""pytest-benchmark options for resbench: which device, models, batch sizes, modes and settings.

Every option can also be set by an environment variable (RB_DEVICE, RB_MODELS, RB_BATCH_SIZES,
RB_IMAGE_SIZE, RB_MODES, RB_SETTINGS, RB_ALL=1), so CI jobs can choose without editing command lines. A setting is a
label as in resbench's tables: precision, then "+cl" for channels_last and "+compile" (or
"+reduce-overhead", "+max-autotune") for torch.compile, e.g. "bf16+cl+compile".
"""

from __future__ import annotations

import os

import pytest

from resbench.cli import (
    check_image_size,
    parse_models,
    parse_positive_ints,
    parse_settings,
    split_list,
)
from resbench.devices import default_device, parse_device
from resbench.env import collect_env
from resbench.measure import Config, missing_package, unfaithful, validate_config
from resbench.models import default_image_size, model_family
from resbench.settings import BACKENDS, MODES, PRECISIONS

DEFAULT_MODELS = "resnet18,small_resnet20"
DEFAULT_SETTINGS = "fp32,fp32+cl"
DEFAULT_BATCHES = {"imagenet": [1, 8], "cifar": [32, 128]}  # ~2 minutes on a 2-core CPU
ALL_BATCHES = {"imagenet": [1, 32, 128], "cifar": [32, 128, 512]}
ALL_SETTINGS = [
    f"{p}{cl}{co}"
    for p in PRECISIONS
    for cl in ("", "+cl")
    for co in ("", "+compile")
]  # fmt: skip

OPTIONS = {
    "--rb-device": ("RB_DEVICE", "device to benchmark on (default: the best available)"),
    "--rb-models": (
        "RB_MODELS",
        f"models or groups all/imagenet/cifar (default: {DEFAULT_MODELS})",
    ),
    "--rb-batch-sizes": ("RB_BATCH_SIZES", "batch sizes (default: 1,8 ImageNet; 32,128 CIFAR)"),
    "--rb-image-size": (
        "RB_IMAGE_SIZE",
        "input sides, e.g. 224,288, for every model (default: 224 ImageNet, 32 CIFAR)",
    ),
    "--rb-modes": ("RB_MODES", "inference, train (default: both)"),
    "--rb-backends": (
        "RB_BACKENDS",
        "backends each setting runs on: eager, compile, aotinductor, onnxruntime, openvino, "
        "cudagraphs (default: as the settings say, eager unless they name one)",
    ),
    "--rb-settings": (
        "RB_SETTINGS",
        f"settings such as bf16+cl+compile (default: {DEFAULT_SETTINGS})",
    ),
}


def pytest_addoption(parser):
    group = parser.getgroup("resbench", "resbench benchmark grid")
    for flag, (var, text) in OPTIONS.items():
        group.addoption(flag, default=os.environ.get(var), help=f"{text}; env {var}")
    group.addoption(
        "--rb-all",
        action="store_true",
        default=os.environ.get("RB_ALL") == "1",
        help="the full grid: every model, more batch sizes, every setting; env RB_ALL=1",
    )


def benchmark_configs(config) -> list[Config]:
    opt = config.getoption
    run_all = opt("--rb-all")
    device = opt("--rb-device") or default_device()
    try:
        models = parse_models(opt("--rb-models") or ("all" if run_all else DEFAULT_MODELS))
        batches = opt("--rb-batch-sizes") and parse_positive_ints(
            opt("--rb-batch-sizes"), "--rb-batch-sizes"
        )
        settings = parse_settings(
            opt("--rb-settings") or (",".join(ALL_SETTINGS) if run_all else DEFAULT_SETTINGS),
            "--rb-settings",
        )
        sizes = [None]
        if opt("--rb-image-size"):
            sizes = parse_positive_ints(opt("--rb-image-size"), "--rb-image-size")
            for model in models:
                check_image_size(model, sizes[0], "--rb-image-size")
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    modes = split_list(opt("--rb-modes") or ",".join(MODES))
    if opt("--rb-backends"):
        backends = split_list(opt("--rb-backends"))
        unknown = [b for b in backends if b not in BACKENDS]
        if unknown or not backends:
            raise pytest.UsageError(
                f"--rb-backends: unknown {', '.join(unknown) or 'empty list'}; choose from: "
                f"{', '.join(BACKENDS)}"
            )
        settings = [
            s | {"backend": b, "compile": "default" if b == "compile" else "off"}
            for s in settings
            for b in backends
        ]
    table = ALL_BATCHES if run_all else DEFAULT_BATCHES
    return [
        Config(model, b, image_size=size, device=device, mode=mode, **s)
        for model in models
        for size in sizes
        for mode in modes
        for s in settings
        for b in (batches or table[model_family(model)])
    ]


def bench_id(c: Config) -> str:
    """The benchmark's name; a size other than the model's default is appended, so names saved
    before the image-size option still compare."""
    size = f"-{c.image_size}px" if c.image_size != default_image_size(c.model) else ""
    return f"{c.model}-b{c.batch_size}-{c.setting}{size}"


def pytest_generate_tests(metafunc):
    if "rb_config" in metafunc.fixturenames:
        mode = metafunc.function.__name__.removeprefix("test_")
        configs = [c for c in benchmark_configs(metafunc.config) if c.mode == mode]
        metafunc.parametrize(
            "rb_config",
            configs,
            ids=[bench_id(c) for c in configs],
            indirect=True,  # through the rb_config fixture, which skips what cannot run here
        )


@pytest.fixture
def rb_config(request) -> Config:
    config: Config = request.param
    try:
        validate_config(config)
    except ValueError as exc:  # a device or setting this machine cannot run
        pytest.skip(str(exc))
    missing = missing_package(config)
    if missing:
        pytest.skip(missing)
    refused = unfaithful(parse_device(config.device), config)
    if refused is not None:  # its label would be false on this machine
        pytest.skip(refused[0])
    return config


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    # a saved run keeps its raw timings: without them `report --compare` can test no significance
    if config.getoption("benchmark_autosave", False) or config.getoption("benchmark_save", None):
        config.option.benchmark_save_data = True


def pytest_benchmark_update_machine_info(config, machine_info):
    # pytest-benchmark knows the CPU only; saved runs must tell GPUs, versions and flags apart
    machine_info["resbench"] = collect_env()
