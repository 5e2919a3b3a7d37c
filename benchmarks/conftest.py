"""pytest-benchmark options for resbench: which device, models, batch sizes, modes and settings.

Every option can also be set by an environment variable (RB_DEVICE, RB_MODELS, RB_BATCH_SIZES,
RB_IMAGE_SIZE, RB_MODES, RB_BACKENDS, RB_SETTINGS, RB_ALL=1, RB_WEIGHTS), so CI jobs can choose
without editing command lines. A setting is a label as in resbench's tables
(``settings.parse_label``): precision, then "+cl" for channels_last, then at most one backend:
"+compile" (or "+reduce-overhead", "+max-autotune") for torch.compile, "+onnxruntime",
"+openvino", ..., e.g. "bf16+cl+compile". A value that names nothing (a typo in a model, mode,
backend or setting) stops the run before collection, as one line; so does a ``--weights`` file (a
torchvision state dict or a resbench trainer checkpoint) that cannot be read or does not fit every
model, read and checked once.
"""

from __future__ import annotations

import os

import pytest
import torch

from resbench import weights
from resbench.cli import (
    check_image_size,
    models_help,
    parse_choices,
    parse_models,
    parse_positive_ints,
    parse_settings,
)
from resbench.engine.devices import default_device, parse_device
from resbench.engine.measure import Config, missing_package, unfaithful, validate_config
from resbench.env import collect_env
from resbench.models import default_image_size, model_family
from resbench.settings import ALL_DEVICES, BACKENDS, MODES, PRECISIONS, label, with_backends
from resbench.weights import Weights

DEFAULT_MODELS = "resnet18,small_resnet20"
DEFAULT_SETTINGS = "fp32,fp32+cl"
DEFAULT_BATCHES = {"imagenet": [1, 8], "cifar": [32, 128]}  # ~2 minutes on a 2-core CPU
ALL_BATCHES = {"imagenet": [1, 32, 128], "cifar": [32, 128, 512]}
ALL_SETTINGS = [
    label(p, cl, backend, "default" if backend == "compile" else "off")
    for p in PRECISIONS
    for cl in (False, True)
    for backend in ("eager", "compile")
]  # fmt: skip

OPTIONS = {
    "--rb-device": ("RB_DEVICE", "device to benchmark on (default: the best available)"),
    "--rb-models": ("RB_MODELS", models_help(DEFAULT_MODELS)),
    "--rb-batch-sizes": ("RB_BATCH_SIZES", "batch sizes (default: 1,8 ImageNet; 32,128 CIFAR)"),
    "--rb-image-size": (
        "RB_IMAGE_SIZE",
        "input sides, e.g. 224,288, for every model (default: 224 ImageNet, 32 CIFAR)",
    ),
    "--rb-modes": ("RB_MODES", "inference, train (default: both)"),
    "--rb-backends": (
        "RB_BACKENDS",
        f"backends each setting runs on: {', '.join(BACKENDS)}; a setting that names one keeps "
        "it (default: as the settings say, eager unless they name one)",
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
    group.addoption(
        "--weights",
        default=os.environ.get("RB_WEIGHTS"),
        help="a torchvision state dict or a resbench trainer checkpoint, loaded into every model "
        "(each must fit it) with the file's classes and input channels (default: He "
        "initialisation); env RB_WEIGHTS",
    )


def benchmark_configs(config) -> list[Config]:
    """The grid the options ask for; pytest.UsageError (one line) for a value that names nothing."""
    opt = config.getoption
    run_all = opt("--rb-all")
    device = opt("--rb-device") or default_device()
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        kind = None
    if kind not in ALL_DEVICES:  # a device this machine lacks is skipped below, with the reason
        raise pytest.UsageError(
            f"--rb-device: unknown device {device!r}; choose one of: cpu, cuda, cuda:N, mps"
        )
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
        modes = parse_choices(opt("--rb-modes") or ",".join(MODES), "--rb-modes", MODES)
        if opt("--rb-backends"):  # as the sweep's --backends: a label that names one keeps it
            backends = parse_choices(opt("--rb-backends"), "--rb-backends", BACKENDS)
            settings = with_backends(settings, backends)
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None
    table = ALL_BATCHES if run_all else DEFAULT_BATCHES
    return [
        Config(model, b, image_size=size, device=device, mode=mode, **s)
        for model in models
        for size in sizes
        for mode in modes
        for s in settings
        for b in (batches or table[model_family(model)])
    ]


def benchmark_weights(config) -> Weights | None:
    """--weights read and checked against the grid's models; pytest.UsageError (one line) if not."""
    path = config.getoption("--weights")
    if not path:
        return None
    try:
        w = weights.read(path)
        weights.check(w, [c.model for c in config.rb_configs])
    except ValueError as exc:
        raise pytest.UsageError(f"--weights: {exc}") from None
    return w


@pytest.fixture
def rb_weights(request) -> Weights | None:
    """The --weights file, read once for the whole session (None: He initialisation)."""
    return request.config.rb_weights


def bench_id(c: Config) -> str:
    """The benchmark's name; a size other than the model's default is appended, so names saved
    before the image-size option still compare."""
    size = f"-{c.image_size}px" if c.image_size != default_image_size(c.model) else ""
    return f"{c.model}-b{c.batch_size}-{c.setting}{size}"


def pytest_generate_tests(metafunc):
    if "rb_config" in metafunc.fixturenames:
        mode = metafunc.function.__name__.removeprefix("test_")
        configs = [c for c in metafunc.config.rb_configs if c.mode == mode]
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
    # the grid is read once, here: a typo is one line and exit 4 before anything is collected
    config.rb_configs = benchmark_configs(config)
    config.rb_weights = benchmark_weights(config)
    # a saved run keeps its raw timings: without them `report --compare` can test no significance
    if config.getoption("benchmark_autosave", False) or config.getoption("benchmark_save", None):
        config.option.benchmark_save_data = True


def pytest_benchmark_update_machine_info(config, machine_info):
    # pytest-benchmark knows the CPU only; saved runs must tell GPUs, versions and flags apart
    machine_info["resbench"] = collect_env()
