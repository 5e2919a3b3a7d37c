"""The sweep's flags: what to measure, how, accuracy on labelled images, and where.

Every flag's default is None in the parsed namespace, meaning "not given", so that ``--resume``
takes the value the run recorded (``grid.resume_options``); ``grid.DEFAULTS`` says what not given
means for a new run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from resbench import cli
from resbench.engine.devices import default_device
from resbench.engine.evaluate import CALIBRATION_IMAGES
from resbench.engine.runtimes import CALIBRATION_METHODS
from resbench.report.analysis import MAX_ACCURACY_DROP
from resbench.settings import BACKENDS, COMPILE_MODES, PRECISIONS, SCENARIOS
from resbench.sweep.grid import (
    CUDA_TIMEOUT_S,
    DEFAULT_BATCH_SIZES,
    DEFAULT_BUDGET_S,
    DEFAULT_FORKS,
    DEFAULT_MODELS,
    DEFAULT_REPEATS,
    PRESETS,
)


def build_parser(epilog: str = "") -> cli.Parser:
    """The sweep's flags; ``epilog`` documents its exit codes."""
    p = cli.Parser(
        prog="python -m resbench.sweep",
        description="Measure a grid of ResNet Configs into a run folder (results.jsonl, CSV, "
        "summary.md, plots).",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = p.add_argument_group("what to measure (lists are comma-separated)")
    what.add_argument(
        "--device",
        help="cpu, cuda, cuda:N or mps; a list such as cpu,cuda compares devices (default: "
        f"{default_device()}, the best available)",
    )
    what.add_argument(
        "--preset", choices=sorted(PRESETS), help="a named grid; flags below narrow it"
    )
    what.add_argument("--models", help=cli.models_help(DEFAULT_MODELS))
    what.add_argument(
        "--batch-sizes",
        help=f"integers 1..{cli.MAX_BATCH} (default: {DEFAULT_BATCH_SIZES})",
    )
    what.add_argument(
        "--image-size",
        help="input sides, e.g. 160,224,288: every model of the grid at each "
        "(default: 224 ImageNet, 32 CIFAR)",
    )
    what.add_argument("--modes", help="inference, train (default: inference)")
    what.add_argument("--precision", help=f"{', '.join(PRECISIONS)} (default: fp32)")
    what.add_argument("--channels-last", help="off, on (default: off)")
    what.add_argument("--compile", help=f"{', '.join(COMPILE_MODES)} (default: off)")
    what.add_argument(
        "--settings",
        help="exact settings instead of the product of the three flags above, labelled as in the "
        "tables: fp32, tf32+cl, bf16+cl+compile, fp16+cl+max-autotune, int8+openvino",
    )
    what.add_argument(
        "--backends",
        help=f"one more axis: {', '.join(BACKENDS)}; each setting runs on each (--compile "
        "gives the compile backend's modes; a --settings label that names a backend keeps it) "
        "(default: eager, or compile where --compile asks)",
    )
    serve = p.add_argument_group("how calls are issued (inference; resbench/engine/scenarios.py)")
    serve.add_argument(
        "--scenario",
        help="a list of: "
        + "; ".join(f"{name} ({s.about})" for name, s in SCENARIOS.items())
        + " (default: single-stream)",
    )
    serve.add_argument(
        "--streams",
        help="independent executors running at once, a list (offline and server; each backend's "
        "own: OpenVINO streams with an infer request each, an ONNX Runtime session each, a "
        "PyTorch thread each, a CUDA stream each) (default: 1)",
    )
    serve.add_argument(
        "--threads",
        help="intra-op threads per stream, a list, for PyTorch and every runtime; streams x "
        "threads may not pass the cores without --oversubscribe (default: the cores shared "
        "between the streams)",
    )
    serve.add_argument(
        "--oversubscribe",
        action="store_true",
        default=None,  # None: not given, so --resume takes the recorded choice
        help="allow streams x threads above this machine's cores",
    )
    serve.add_argument(
        "--rate",
        help="server: requests per second offered, one image each, as a seeded Poisson process; "
        "a list, each its own row",
    )
    serve.add_argument(
        "--max-queue-ms",
        type=float,
        metavar="MS",
        help="server: how long the oldest waiting request may wait for a fuller batch (the "
        "dynamic batcher's window; batches never pass the batch size) (default: 0, an idle "
        "stream takes whatever waits)",
    )
    serve.add_argument(
        "--target-p99-ms",
        type=float,
        metavar="MS",
        help="server: search for the highest sustained rate whose p99 latency is at most MS "
        "(bisection, as MLPerf LoadGen's peak search; every rate tried is recorded)",
    )
    how = p.add_argument_group("how")
    how.add_argument(
        "--budget",
        type=float,
        help="seconds of measuring per Config, after warm-up, shared by all its forks and "
        f"repeats (default: {DEFAULT_BUDGET_S})",
    )
    how.add_argument(
        "--forks",
        type=int,
        metavar="N",
        help="fresh worker processes per Config: the grid runs N times, each pass in a new "
        "process starting k/N of the way through the grid; the Result is the median of the "
        "forks' medians, with their spread (fork_spread), which shows the variance between "
        "processes (placement, allocator, memory layout, drift) that repeats cannot "
        f"(default: {DEFAULT_FORKS}; with --isolate off, which measures in this process, 1)",
    )
    how.add_argument(
        "--repeats",
        type=int,
        help="independent preparations per Config in each fork's process (fresh model, inputs, "
        "warm-up), sharing the budget; the fork's median is the median of theirs, with their "
        f"spread (repeat_spread) (default: {DEFAULT_REPEATS})",
    )
    how.add_argument(
        "--wait-quiet",
        type=float,
        metavar="SECONDS",
        help="before each preparation, wait up to SECONDS until other processes leave this "
        "process's CPUs idle; the wait is recorded and rows that never got quiet are marked "
        "(default: 0, do not wait)",
    )
    how.add_argument(
        "--weights",
        help="a torchvision state dict (e.g. resnet50-11ad3fa6.pth) or a resbench trainer "
        "checkpoint, loaded into every model of the grid with the file's classes and input "
        "channels; read and checked once before the first Config, and a model it does not fit "
        "is refused by name (default: He initialisation)",
    )
    acc = p.add_argument_group("accuracy on labelled images")
    acc.add_argument(
        "--eval-data",
        metavar="PATH",
        help="score every inference row on labelled images: a CIFAR-10 folder, MNIST or "
        "Fashion-MNIST idx files (flat, or torchvision's layout), or an ImageFolder of class "
        "folders (resize 256, centre crop 224, ImageNet mean/std); top-1, top-5, the drop "
        "against fp32 eager, the flips; needs --weights, trained weights to score "
        "(default: not scored)",
    )
    acc.add_argument(
        "--eval-images",
        type=int,
        metavar="N",
        help="a seeded subset of N images of the test split (the indices go to eval.json) "
        "(default: all of them)",
    )
    acc.add_argument(
        "--calibration-data",
        metavar="SOURCES",
        help="what int8 calibrates on, a list: train (the eval data's training split, or an "
        "ImageFolder's images outside the eval subset), noise (generated N(0,1) images), or a "
        "folder; each is its own row, noise labelled int8[noise] (default: train with "
        "--eval-data, else noise)",
    )
    acc.add_argument(
        "--calibration",
        choices=CALIBRATION_METHODS,
        help="onnxruntime's calibrator for int8's activation ranges (default: minmax)",
    )
    acc.add_argument(
        "--calibration-images",
        type=int,
        metavar="N",
        help=f"real images int8 calibrates on (default: {CALIBRATION_IMAGES})",
    )
    acc.add_argument(
        "--max-accuracy-drop",
        type=float,
        metavar="POINTS",
        help="the answers name the fastest setting within this many points of fp32 eager's "
        f"top-1, and the fastest overall with its drop (default: {MAX_ACCURACY_DROP})",
    )
    how.add_argument(
        "--allow-emulated",
        action="store_true",
        default=None,  # None: not given, so --resume takes the recorded choice
        help="measure a precision this hardware only emulates (bf16 on a CPU without bf16 units; "
        "effective_precision says bf16-emulated) instead of skipping it with the reason; a "
        "runtime that would compute another precision than the label is always skipped",
    )
    how.add_argument(
        "--isolate",
        choices=["auto", "on", "off"],
        help="measure in a worker process, replaced after a crash, a hang (--timeout) or an "
        "error, so a poisoned CUDA context stays there (default: auto = on for CUDA or more than "
        "one fork, off otherwise)",
    )
    how.add_argument(
        "--timeout",
        type=float,
        help=f"per-Config limit in seconds for isolated workers (default: {CUDA_TIMEOUT_S})",
    )
    how.add_argument(
        "--max-minutes",
        type=float,
        help="start no new Config after this many minutes; exit code 3 if some were left",
    )
    how.add_argument(
        "--find-max-batch",
        action="store_true",
        default=None,  # None: not given, so --resume takes the recorded choice
        help="after the grid, search each model and setting for the largest batch that fits "
        "(doubling from the largest --batch-sizes, then bisecting to within 1/16); CUDA or MPS only",
    )
    how.add_argument("--no-progress", action="store_true", help="no progress bar (lines only)")
    where = p.add_argument_group("where")
    where.add_argument(
        "--out", type=Path, help="run folder (default: results/<timestamp>-<device>)"
    )
    where.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out: its recorded grid and options (flags given override "
        "them), skipping finished Configs and measuring those that ended in error again; inside "
        "a fork (a Config with k forks done gets fork k next); a larger --forks adds forks, a "
        "smaller one is refused",
    )
    where.add_argument(
        "--keep-errors",
        action="store_true",
        help="with --resume, keep Results that ended in error instead of measuring them again",
    )
    return p
