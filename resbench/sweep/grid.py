"""The sweep's grid and flags: named presets, the product of flag lists, and the options a run records.

``build_grid(args)`` turns the sweep's flags (or a preset narrowed by them) into Configs, dropping
the combinations a device cannot run. ``GRID_OPTIONS`` and ``RUN_OPTIONS`` are the flags a run
folder records in run.json, so ``--resume`` continues the same grid without them being given again.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from pathlib import Path

from resbench import cli, settings
from resbench.engine.devices import default_device
from resbench.engine.evaluate import CALIBRATION_IMAGES
from resbench.engine.measure import Config, validate_config
from resbench.models import list_models
from resbench.report.analysis import MAX_ACCURACY_DROP
from resbench.settings import (
    BACKENDS,
    COMPILE_MODES,
    MODES,
    PRECISIONS,
    with_backends,
)
from resbench.sweep.serving import serving

IMAGENET, CIFAR = list_models("imagenet"), list_models("cifar")
# the flags that choose the Configs, and those that choose how they are measured: both kept in
# run.json; None in the parsed flags means "not given", so a resume takes the recorded value
GRID_OPTIONS = ("device", "preset", "models", "batch_sizes", "modes", "precision",
                "channels_last", "compile", "settings", "backends", "image_size",
                "calibration_data", "scenario", "streams", "threads", "rate", "max_queue_ms",
                "target_p99_ms", "oversubscribe")  # fmt: skip
RUN_OPTIONS = ("budget", "isolate", "timeout", "find_max_batch", "repeats", "forks", "wait_quiet",
               "weights", "allow_emulated", "eval_data", "eval_images", "calibration",
               "calibration_images", "max_accuracy_drop")  # fmt: skip
# the run options that change how a number is measured: a resume must not change them under
# finished Results, or one table would hold numbers measured two ways (--isolate runs the same
# measure() in another process; --timeout and --find-max-batch change no number)
MEASURING = ("budget", "repeats", "wait_quiet", "weights", "eval_data", "eval_images",
             "calibration", "calibration_images")  # fmt: skip
DEFAULT_MODELS = "resnet18,resnet50,small_resnet20"  # without a preset
DEFAULT_BATCH_SIZES = "1,32"


def _settings(labels: str) -> list[dict]:
    return cli.parse_settings(labels, "settings")


# Left out of the quick preset's first line, estimated from FLOPs (at batch 1 fp32 a Config costs
# about 3 s of warm-up, budget and preparation, plus its iterations at roughly 110 GMAC/s here):
# the 101-layer ResNeXt and Wide ResNet do 15.5-22.8 GMACs per image (4-6x resnet50's) with 83-127M
# parameters to initialise per preparation, ~7 s a Config; preact_resnet32/44 repeat the units of
# preact_resnet20/56 at depths in between. The eleven new variants kept add ~40 s.
QUICK_LEFT_OUT = ("resnext101_32x8d", "resnext101_64x4d", "wide_resnet101_2", "preact_resnet32",
                  "preact_resnet44",
                  # He-initialised, in eval mode (BN's running statistics untouched), its identity
                  # path overflows to NaN logits: an error row, which measures nothing
                  "preact_resnet1001")  # fmt: skip


# A preset is a union of grids; a grid is a product of these lists (settings: exact combinations
# of precision, channels_last and compile, instead of their product).
PRESETS: dict[str, list[dict]] = {
    # ~3 minutes on a 2-core CPU: every variant once (but QUICK_LEFT_OUT), then settings on a few
    "quick": [
        dict(models=[m for m in IMAGENET + CIFAR if m not in QUICK_LEFT_OUT], batch_sizes=[1]),
        dict(models=["resnet18", "resnet50"], batch_sizes=[1, 8], precision=["fp32", "bf16"],
             channels_last=[False, True]),
        # small_resnet20 at batch 16 and 64 (it was small_resnet20/56 at 32 and 128): the same
        # questions (batch scaling, train, bf16, channels_last) at a sixth of the work, so that two
        # forks of the preset take minutes, not five, on a 2-core CPU (small_resnet56 is at b1 above)
        dict(models=["small_resnet20"], batch_sizes=[16, 64],
             modes=["inference", "train"], precision=["fp32", "bf16"], channels_last=[False, True]),
        dict(models=["resnet18"], batch_sizes=[8], modes=["train"]),
        # the deployment runtimes, so the answer weighs them too (int8+openvino was 17x fp32 eager
        # on an AMX host); skipped, saying which extra to install, where they are not installed
        dict(models=["resnet18", "resnet50"], batch_sizes=[8],
             settings=_settings("fp32+openvino,int8+openvino")),
    ],
    # a GPU's afternoon: every variant x batch sizes x precision x channels_last x mode, compile on some
    "standard": [
        dict(models=IMAGENET, batch_sizes=[1, 32, 128], modes=list(MODES),
             precision=["fp32", "tf32", "bf16"], channels_last=[False, True]),
        dict(models=CIFAR, batch_sizes=[32, 128, 512], modes=list(MODES),
             precision=["fp32", "tf32", "bf16"], channels_last=[False, True]),
        dict(models=["resnet18", "resnet50", "small_resnet20", "small_resnet56"],
             batch_sizes=[32, 128], modes=list(MODES), precision=["bf16"], channels_last=[True],
             compile=["default"]),
    ],
    # a first look at a GPU in ~5 minutes (scripts/gpu_check.sh), most telling first: ResNet-50
    # in depth, compile on it, two more models; fp32+cl is left out (without tensor cores NHWC only
    # loses, and cuDNN's autotuning of it took 69 s for one resnet50 train Config on an H100)
    "gpu": [
        dict(models=["resnet50"], batch_sizes=[32, 256], modes=list(MODES),
             settings=_settings("fp32,tf32,tf32+cl,bf16,bf16+cl")),
        dict(models=["resnet50"], batch_sizes=[256], settings=_settings("bf16+cl+compile")),
        dict(models=["resnet18", "small_resnet20"], batch_sizes=[256], modes=list(MODES),
             settings=_settings("tf32,bf16+cl")),
        dict(models=["resnet50"], batch_sizes=[256, 512], modes=["train"],
             settings=_settings("bf16+cl+compile")),
        dict(models=["resnet18", "small_resnet20"], batch_sizes=[32], modes=list(MODES),
             settings=_settings("tf32,bf16+cl")),
    ],
    # everything: all precisions, batch sizes and compile modes
    "full": [
        dict(models=IMAGENET, batch_sizes=[1, 8, 32, 64, 128, 256], modes=list(MODES),
             precision=list(PRECISIONS), channels_last=[False, True],
             compile=["off", "default", "max-autotune"]),
        dict(models=CIFAR, batch_sizes=[1, 32, 128, 512, 1024], modes=list(MODES),
             precision=list(PRECISIONS), channels_last=[False, True],
             compile=["off", "default", "max-autotune"]),
    ],
}  # fmt: skip
DEFAULT_BUDGET_S = (
    1.0  # per Config: enough for a 1% median on a GPU; slow CPU models stop at 3 runs
)
CUDA_TIMEOUT_S = 900.0  # per Config in an isolated worker: max-autotune can compile for minutes
# two fresh processes per Config, one preparation each: on this 2-core CPU the process (its memory
# layout, allocator state, placement) moves a Config's median 1.1-1.7x between fresh sweeps, while
# two preparations in one process agree within a few %; 2 x 1 costs what 1 x 2 did, but for a
# second worker's start-up and warm-up (the quick preset: 3.6 minutes on the 2-core EPYC)
DEFAULT_FORKS = 2
DEFAULT_REPEATS = 1
# what a run recorded before --forks existed meant by these options not given (one process, two
# preparations), so that resuming it goes on measuring the same way
LEGACY_DEFAULTS = {"forks": 1, "repeats": 2}


def expand(
    devices: Sequence[str],
    models: Sequence[str],
    batch_sizes: Sequence[int],
    modes: Sequence[str] = ("inference",),
    precision: Sequence[str] = ("fp32",),
    channels_last: Sequence[bool] = (False,),
    compile: Sequence[str] = ("off",),
    settings: Sequence[dict] | None = None,
    backends: Sequence[str] | None = None,
    image_sizes: Sequence[int | None] = (None,),
) -> list[Config]:
    """The product of the lists, ordered so that batch sizes of one setting ascend together.

    ``image_sizes`` (None: each model's default) runs every model at each input side.

    ``settings`` (dicts of precision, channels_last, backend, compile) replaces the product of
    those three; ``backends`` runs each setting on each backend, with ``compile``'s modes for the
    compile backend.
    """
    if settings is None:
        settings = [
            {"precision": p, "channels_last": cl, "compile": co}
            for p, cl, co in itertools.product(
                precision, channels_last, ["off"] if backends else compile
            )
        ]
    if backends:
        settings = with_backends(list(settings), list(backends), list(compile))
    return [
        Config(model=m, batch_size=b, image_size=size, device=d, mode=mo, **s)
        for d, m, size, mo, s, b in itertools.product(
            devices, models, image_sizes, modes, settings, batch_sizes
        )
    ]


DEFAULTS = {"budget": DEFAULT_BUDGET_S, "isolate": "auto", "timeout": CUDA_TIMEOUT_S,
            "find_max_batch": False, "repeats": DEFAULT_REPEATS, "wait_quiet": 0.0,
            "weights": None, "allow_emulated": False, "eval_data": None, "eval_images": None,
            "calibration": "minmax", "calibration_images": CALIBRATION_IMAGES,
            "max_accuracy_drop": MAX_ACCURACY_DROP}  # fmt: skip
# what a grid flag not given means without a preset (with one, the preset's own lists)
GRID_DEFAULTS = {"preset": None, "models": DEFAULT_MODELS, "batch_sizes": DEFAULT_BATCH_SIZES,
                 "modes": "inference", "precision": "fp32", "channels_last": "off",
                 "compile": "off", "settings": None, "backends": "eager",
                 "calibration_data": None, "scenario": settings.DEFAULT_SCENARIO, "streams": "1",
                 "threads": None, "rate": None, "max_queue_ms": None, "target_p99_ms": None,
                 "oversubscribe": None}  # fmt: skip


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _legacy(recorded: dict) -> bool:
    """Whether a run's record is from before --forks (every newer one records its forks)."""
    return bool(recorded) and "forks" not in recorded


def _recorded(name: str, recorded: dict) -> tuple[object, str]:
    """What a run recorded for an option, and how to say it: "2, the default" when not given."""
    value = recorded.get(name)
    if value is not None:
        return value, str(value)
    if name in LEGACY_DEFAULTS and _legacy(recorded):
        return LEGACY_DEFAULTS[name], f"{LEGACY_DEFAULTS[name]}, the default before --forks"
    if name in GRID_DEFAULTS and recorded.get("preset"):
        return None, "not given: the preset's"
    default = DEFAULTS[name] if name in DEFAULTS else GRID_DEFAULTS.get(name)
    if name == "device":
        default = default_device()
    return default, f"{'none' if default is None else default}, the default"


def resume_options(args, recorded: dict, measured: int = 0) -> list[str]:
    """Fill the flags not given from a run's recorded options (in place); notes saying what the
    resumed grid is, and which flags given differ from the record.

    ``measured``: the run's finished Results. While there are any, a flag that changes how a number
    is measured (``MEASURING``) may not change: a UsageError names it, its recorded value and the
    way out. Flags that narrow or extend the grid may change: each row carries its own Config.
    """
    options = GRID_OPTIONS + RUN_OPTIONS
    if not recorded:
        return ["--resume: this run has no run.json; the grid comes from the flags given"]
    differ = {}
    for name in options:
        given = getattr(args, name)
        value, said = _recorded(name, recorded)
        if given is not None and given != value:
            differ[name] = f"{_flag(name)} {given} (recorded: {said})"
    changed = [differ[n] for n in MEASURING if n in differ]
    had = _recorded("forks", recorded)[0]  # more forks add to every Config; fewer would mix
    if measured and args.forks is not None and had is not None and args.forks < had:
        raise cli.UsageError(
            f"--resume: --forks {args.forks} is fewer than the run's {had}: its finished Results "
            f"combine up to {had} processes each, and one table would mix both; resume with "
            f"--forks {had} (or more, which adds forks to every Config), or start a new run in "
            "another --out"
        )
    if changed and measured:
        raise cli.UsageError(
            f"--resume: {'; '.join(changed)}: the run holds "
            f"{cli.plural(measured, 'finished Result')} measured the recorded way, and one table "
            f"would mix both; resume without {'that flag' if len(changed) == 1 else 'those flags'}, "
            "or start a new run in another --out"
        )
    for name in options:
        if getattr(args, name) is None:
            legacy = name in LEGACY_DEFAULTS and _legacy(recorded)
            setattr(args, name, _recorded(name, recorded)[0] if legacy else recorded.get(name))
    if differ:
        return [f"--resume: the flags given differ from the recorded run, and they win: "
                f"{'; '.join(differ.values())}"]  # fmt: skip
    shown = " ".join(f"{_flag(n)} {recorded[n]}" for n in GRID_OPTIONS if recorded.get(n))
    return [f"--resume: continuing the recorded grid ({shown})"]


def options_of(args) -> dict:
    """The grid and run options to record, as given (None: not given, so the default)."""
    return {name: getattr(args, name) for name in GRID_OPTIONS + RUN_OPTIONS}


def apply_defaults(args) -> None:
    """Fill the flags not given; --forks is 1 with --isolate off (one process), else
    DEFAULT_FORKS, and more than one fork with --isolate off is a UsageError."""
    for name, value in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.forks is None:
        args.forks = 1 if args.isolate == "off" else DEFAULT_FORKS
    if args.forks > 1 and args.isolate == "off":
        raise cli.UsageError(
            f"--forks {args.forks} measures each Config in {args.forks} fresh worker processes, "
            "and --isolate off measures in this one; give --forks 1 or drop --isolate off"
        )


def build_grid(args) -> tuple[list[Config], list[str]]:
    """The Configs to run, and notes on combinations dropped as unsupported on a device."""
    devices = cli.parse_devices(default_device() if args.device is None else args.device)
    grids = [dict(g) for g in PRESETS[args.preset]] if args.preset else [{}]
    given = {name: getattr(args, name) is not None for name in GRID_OPTIONS}
    explicit = {
        "models": given["models"] and cli.parse_models(args.models),
        "batch_sizes": given["batch_sizes"]
        and cli.parse_positive_ints(args.batch_sizes, "--batch-sizes"),
        "modes": given["modes"] and cli.parse_choices(args.modes, "--modes", MODES),
        "precision": given["precision"]
        and cli.parse_choices(args.precision, "--precision", PRECISIONS),
        "channels_last": given["channels_last"]
        and cli.parse_on_off(args.channels_last, "--channels-last"),
        "compile": given["compile"] and cli.parse_choices(args.compile, "--compile", COMPILE_MODES),
        "settings": given["settings"] and cli.parse_settings(args.settings, "--settings"),
        "backends": given["backends"] and cli.parse_choices(args.backends, "--backends", BACKENDS),
        "image_sizes": given["image_size"]
        and cli.parse_positive_ints(args.image_size, "--image-size"),
    }
    if given["settings"] and (given["precision"] or given["channels_last"] or given["compile"]):
        raise cli.UsageError(
            "--settings replaces --precision, --channels-last and --compile; give one or the other"
        )
    modes = [m for m in explicit["compile"] or [] if m != "off"]
    if modes and explicit["backends"] and "compile" not in explicit["backends"]:
        raise cli.UsageError(
            f"--compile {','.join(modes)} is a mode of the compile backend, which --backends "
            f"{args.backends} leaves out; add compile to --backends, or drop --compile"
        )
    if not args.preset:
        explicit["models"] = explicit["models"] or cli.parse_models(DEFAULT_MODELS)
        explicit["batch_sizes"] = explicit["batch_sizes"] or cli.parse_positive_ints(
            DEFAULT_BATCH_SIZES, "--batch-sizes"
        )
    configs: list[Config] = []
    for grid in grids:
        grid.update({k: v for k, v in explicit.items() if v})  # flags narrow or override a preset
        if explicit["settings"]:
            for axis in ("precision", "channels_last", "compile"):
                grid.pop(axis, None)
        elif any(explicit[axis] for axis in ("precision", "channels_last", "compile")):
            grid.pop("settings", None)  # the three flags replace a preset's settings
        configs += expand(devices, **grid)
    configs = list({c.key(): c for c in serving(_calibrated(configs, args), args)}.values())
    if explicit["image_sizes"]:  # a size too small for a model is the user's mistake, not a drop
        for model in dict.fromkeys(c.model for c in configs):
            cli.check_image_size(model, min(explicit["image_sizes"]))
    kept, dropped = [], {}
    for config in configs:
        try:
            validate_config(config)
            kept.append(config)
        except ValueError as exc:
            dropped.setdefault(str(exc), 0)
            dropped[str(exc)] += 1
    if not kept:
        raise cli.UsageError(next(iter(dropped)))
    notes = [f"dropped {cli.plural(n, 'Config')}: {why}" for why, n in dropped.items()]
    return kept, notes


def calibration_sources(args) -> list[str | None]:
    """What int8 calibrates on (--calibration-data: train, noise, or folders): labelled images
    whenever the run has any, never noise unless asked for; N(0,1) without labelled data."""
    if args.calibration_data is None:
        return [settings.CALIBRATION_DEFAULT] if args.eval_data is not None else [None]
    if args.eval_data is None:
        raise cli.UsageError(
            "--calibration-data needs --eval-data (the labelled images int8 is scored on, and "
            "whose preprocessing the calibration images share)"
        )
    sources = [s.strip() for s in str(args.calibration_data).split(",") if s.strip()]
    for source in sources:
        if source not in ("train", "noise") and not Path(source).is_dir():
            raise cli.UsageError(
                f"--calibration-data: {source!r} is neither train, noise nor a folder"
            )
    if not sources:
        raise cli.UsageError("--calibration-data: give train, noise or a folder (a list is fine)")
    return list(dict.fromkeys(sources))


def _calibrated(configs: list[Config], args) -> list[Config]:
    """Each int8 Config once per calibration source; one whose --settings label names its own
    (int8[noise]+openvino) keeps it."""
    sources = calibration_sources(args)
    out = []
    for c in configs:
        if not PRECISIONS[c.precision].quantised or c.calibration_data is not None:
            out.append(c)
            continue
        out += [dataclasses.replace(c, calibration_data=s) for s in sources]
    return out
