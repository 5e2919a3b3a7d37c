"""`python -m resbench.profile`: torch.profiler over one Config -> trace, operator and stage tables.

The model is prepared exactly as ``measure()`` prepares it. The first call (compilation, lazy
initialisation) and a warm-up run before the profiler starts; its schedule then skips ``--wait``
steps, warms up ``--warmup`` more, and records ``--steps`` active steps. Usage::

    python -m resbench.profile --model resnet50 --batch-size 32 --device cuda --precision bf16 \\
        --channels-last on --mode train --out profiles/r50

Stages are labelled with ``record_function`` ranges opened and closed by module hooks; backward work
is attributed to a stage through the autograd sequence number that links each backward node to the
forward operator that made it. A stage's time is the wall time of its ranges on the CPU and the device
time of the kernels launched inside them on CUDA. Under torch.compile the graph is fused across
stages and the stage split is not reported.
"""

from __future__ import annotations

import gzip
import json
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, record_function, schedule

from resbench import cli, weights
from resbench.engine import timing
from resbench.engine.measure import Config, prepare, validate_config
from resbench.models import list_models
from resbench.profile.tables import Profile, write_tables
from resbench.settings import BACKENDS, MODES
from resbench.weights import Weights

STAGE_PREFIX = "stage:"
CATEGORIES = [  # (category, pattern on the operator name), first match wins
    ("convolution", r"conv|cudnn|winograd|implicit_gemm"),
    ("batch norm", r"batch_norm|bn_"),
    ("relu", r"relu|threshold|clamp_min"),
    ("pooling", r"pool"),
    ("linear", r"addmm|\bmm\b|linear|gemm"),
    ("add (skip path)", r"aten::add"),
    ("optimizer", r"sgd|_foreach|optimizer"),
    ("loss", r"cross_entropy|nll_loss|log_softmax"),
]


def category(name: str) -> str:
    low = name.lower()
    for label, pattern in CATEGORIES:
        if re.search(pattern, low):
            return label
    return "other"


class StageMarks:
    """record_function ranges around each stage's forward pass (module hooks, or a wrapped method)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.handles = []
        self.model = model
        self.patched: list[str] = []
        self._open: dict[str, record_function] = {}
        for name in model.stage_names:
            target = getattr(model, name)
            if isinstance(target, torch.nn.Module):
                self.handles.append(target.register_forward_pre_hook(self._enter(name)))
                self.handles.append(target.register_forward_hook(self._exit(name)))
            else:  # stem() and head() are methods: wrap the bound method on the instance
                setattr(model, name, self._wrap(name, target))
                self.patched.append(name)

    def _enter(self, name: str):
        def hook(*_):
            rf = record_function(STAGE_PREFIX + name)
            rf.__enter__()
            self._open[name] = rf

        return hook

    def _exit(self, name: str):
        def hook(*_):
            rf = self._open.pop(name, None)
            if rf is not None:
                rf.__exit__(None, None, None)

        return hook

    def _wrap(self, name: str, method):
        def wrapped(x):
            with record_function(STAGE_PREFIX + name):
                return method(x)

        return wrapped

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        for name in self.patched:
            delattr(self.model, name)


def _self_time_us(evt, on_cuda: bool) -> float:
    return evt.self_device_time_total if on_cuda else evt.self_cpu_time_total


def _total_time_us(evt, on_cuda: bool) -> float:
    return evt.device_time_total if on_cuda else evt.cpu_time_total


def flops_on_working_rows(events, on_cuda: bool) -> dict[str, float]:
    """FLOPs per operator name, moved from the op that counts them to the descendant that works.

    The profiler counts a convolution's FLOPs on ``aten::conv2d``, whose time is spent in a child
    (``aten::mkldnn_convolution`` on CPUs, ``aten::cudnn_convolution`` on CUDA): each counted
    event gives its FLOPs to the event in its subtree (itself included) with the most self time.
    """
    moved: dict[str, float] = {}
    for evt in events:
        if not evt.flops:
            continue
        worker, stack = evt, list(evt.cpu_children)
        while stack:
            child = stack.pop()
            if _self_time_us(child, on_cuda) > _self_time_us(worker, on_cuda):
                worker = child
            stack.extend(child.cpu_children)
        moved[worker.key] = moved.get(worker.key, 0.0) + evt.flops
    return moved


def ops_frame(prof, on_cuda: bool, active_steps: int) -> pd.DataFrame:
    """One row per operator (CPU-side ops), sorted by self time on the device that does the work."""
    flops = flops_on_working_rows(prof.events(), on_cuda)
    rows = []
    for evt in prof.key_averages():
        if evt.device_type != DeviceType.CPU or evt.key.startswith(STAGE_PREFIX):
            continue
        if evt.key.startswith("ProfilerStep"):
            continue
        self_us = _self_time_us(evt, on_cuda)
        rows.append(
            {
                "operator": evt.key,
                "category": category(evt.key),
                "calls": evt.count // active_steps,
                "total_ms": _total_time_us(evt, on_cuda) / 1e3 / active_steps,
                "self_ms": self_us / 1e3 / active_steps,
                "flops": flops.get(evt.key, 0.0) / active_steps,
                "self_memory_mb": (
                    evt.self_device_memory_usage if on_cuda else evt.self_cpu_memory_usage
                )
                / 1e6
                / active_steps,
            }
        )
    frame = pd.DataFrame(rows)
    total_self = frame["self_ms"].sum()
    frame["share"] = frame["self_ms"] / total_self if total_self > 0 else 0.0
    frame["tflops"] = [
        f / (t / 1e3) / 1e12 if f and t > 0 else float("nan")
        for f, t in zip(frame["flops"], frame["total_ms"], strict=True)
    ]
    return frame.sort_values("self_ms", ascending=False).reset_index(drop=True)


BACKWARD_PREFIX = "autograd::engine::evaluate_function: "


def _stage_of(evt) -> str | None:
    while evt is not None:
        if evt.name.startswith(STAGE_PREFIX):
            return evt.name[len(STAGE_PREFIX) :]
        evt = evt.cpu_parent
    return None


def median_step(prof):
    """The profiled step of median wall time: one step whose split is not skewed by an outlier.

    Each step ends with a device synchronisation, so its host wall time is the step's time on every
    device (its CUDA kernel total would miss the kernels that the autograd thread launches).
    """
    steps = sorted(
        (e for e in prof.events() if e.name.startswith("ProfilerStep")),
        key=lambda e: e.cpu_time_total,
    )
    return steps[len(steps) // 2] if steps else None


def _range_time_us(evt, on_cuda: bool) -> float:
    """A range's wall time on CPU; on CUDA the kernel time launched inside it (children included).

    torch's device_time_total would also count the GPU-side copy of a record_function range (the
    annotation's span, idle gaps included) as if it were a kernel; that is left out here.
    """
    if not on_cuda:
        return evt.cpu_time_total
    own = sum(k.duration for k in evt.kernels if k.name != evt.name)
    return own + sum(_range_time_us(child, True) for child in evt.cpu_children)


def kernel_time_us(prof, step) -> float:
    """Device time of the kernels launched within ``step``, GPU annotation spans left out."""
    lo, hi = step.time_range.start, step.time_range.end
    return sum(
        k.duration
        for e in prof.events()
        if lo <= e.time_range.start <= hi
        for k in e.kernels
        if k.name != e.name
    )


def stages_frame(prof, on_cuda: bool, model: torch.nn.Module, step) -> pd.DataFrame:
    """Time per stage and pass within ``step`` (a ProfilerStep event).

    Forward: the stage's record_function range. Backward: each autograd node's evaluation is linked
    to the forward operator that created it by its sequence number, and so to that operator's stage.
    On CPU a range's wall time; on CUDA the device time of the kernels launched inside it. Events
    belong to the step whose host time range holds their start (backward may run on another thread).
    """
    lo, hi = step.time_range.start, step.time_range.end
    events = [e for e in prof.events() if lo <= e.time_range.start <= hi]
    times: dict[tuple[str, str], float] = {}
    seq_stage: dict[int, str] = {}
    for evt in events:
        if evt.name.startswith(STAGE_PREFIX):
            name = evt.name[len(STAGE_PREFIX) :]
            key = (name, "update" if name == "optimizer" else "forward")
            times[key] = times.get(key, 0.0) + _range_time_us(evt, on_cuda)
        elif evt.sequence_nr >= 0 and not evt.name.startswith(BACKWARD_PREFIX):
            stage = _stage_of(evt.cpu_parent)
            if stage is not None:
                seq_stage.setdefault(evt.sequence_nr, stage)
    for evt in events:
        if evt.name.startswith(BACKWARD_PREFIX) and evt.sequence_nr in seq_stage:
            key = (seq_stage[evt.sequence_nr], "backward")
            times[key] = times.get(key, 0.0) + _range_time_us(evt, on_cuda)
    rows = [
        {"stage": stage, "pass": direction, "ms": times[(stage, direction)] / 1e3}
        for stage in (*model.stage_names, "loss", "optimizer")
        for direction in ("forward", "backward", "update")
        if (stage, direction) in times
    ]
    return pd.DataFrame(rows)


def run_profile(
    config: Config,
    out: Path,
    steps: int = 5,
    wait: int = 1,
    warmup: int = 2,
    top_k: int = 20,
    with_stack: bool = False,
    tensorboard: bool = False,
    allow_emulated: bool = False,
    weights: str | Weights | None = None,
) -> Profile:
    """Profile ``config`` into ``out``; ``weights`` (a path or a read ``Weights``) loads real
    weights into the model, built with the file's classes and input channels."""
    device = validate_config(config)
    out.mkdir(parents=True, exist_ok=True)
    on_cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
    with prepare(config, allow_emulated=allow_emulated, weights=weights) as prepared:
        warm, _ = timing.warmup(prepared.step, device, max_s=5.0)  # compile/autotune stay out
        samples = timing.autorange(prepared.step, device, 1.0, float(warm.samples_ms[-1]))
        step_ms = timing.stats(samples.samples_ms).median
        marks = None
        if config.compile == "off":
            marks = StageMarks(prepared.model)
        try:
            with (
                timing.ForeignCpu() as foreign,
                torch.profiler.profile(
                    activities=activities,
                    schedule=schedule(wait=wait, warmup=warmup, active=steps, repeat=1),
                    record_shapes=True,
                    profile_memory=True,
                    with_flops=True,
                    with_stack=with_stack,
                ) as prof,
            ):
                for _ in range(wait + warmup + steps):
                    prepared.step()
                    timing.synchronize(device)
                    prof.step()
        finally:
            if marks is not None:
                marks.remove()
        model = prepared.model
    paths = {"trace": out / "trace.json.gz"}
    prof.export_chrome_trace(str(paths["trace"]))
    if tensorboard:
        paths["tensorboard"] = out / "tensorboard"
        torch.profiler.tensorboard_trace_handler(str(paths["tensorboard"]))(prof)
    ops = ops_frame(prof, on_cuda, steps)
    step = median_step(prof)
    stages = stages_frame(prof, on_cuda, model, step) if marks is not None else None
    step_profiled_ms = step.cpu_time_total / 1e3 if step is not None else float("nan")
    kernel_ms = kernel_time_us(prof, step) / 1e3 if on_cuda and step is not None else None
    result = Profile(
        config, step_ms, step_profiled_ms, ops, stages, paths, foreign.cores, kernel_ms
    )
    write_tables(result, out, top_k)
    return result


def trace_events(path: Path) -> list[dict]:
    with gzip.open(path, "rt") as f:
        return json.load(f)["traceEvents"]


def build_parser() -> cli.Parser:
    p = cli.Parser(
        prog="python -m resbench.profile",
        description="torch.profiler over one Config: trace.json.gz, ops.md, stages.md/png.",
    )
    p.add_argument("--model", required=True, help=cli.models_help(many=False))
    p.add_argument("--batch-size", type=int, default=8, help="(default: %(default)s)")
    p.add_argument("--image-size", type=int, help="(default: 224 ImageNet, 32 CIFAR)")
    cli.add_device(p)
    p.add_argument("--mode", default="inference", help=f"{', '.join(MODES)} (default: %(default)s)")
    cli.add_setting_flags(p, many=False)
    p.add_argument(
        "--backend",
        help=f"{', '.join(BACKENDS)} (default: eager, or compile where --compile asks); other "
        "runtimes show as one opaque call",
    )
    p.add_argument(
        "--steps", type=int, default=5, help="active profiled steps (default: %(default)s)"
    )
    p.add_argument("--wait", type=int, default=1, help="skipped steps (default: %(default)s)")
    p.add_argument(
        "--warmup", type=int, default=2, help="profiler warm-up steps (default: %(default)s)"
    )
    p.add_argument(
        "--top-k", type=int, default=20, help="operators in ops.md (default: %(default)s)"
    )
    p.add_argument(
        "--allow-emulated",
        action="store_true",
        help="profile a precision this hardware only emulates (bf16 on a CPU without bf16 units) "
        "instead of refusing it",
    )
    p.add_argument(
        "--weights",
        help="a torchvision state dict or a resbench trainer checkpoint to load into the model "
        "(default: He initialisation)",
    )
    p.add_argument("--with-stack", action="store_true", help="record Python stacks (slower)")
    p.add_argument("--tensorboard", action="store_true", help="also write a TensorBoard trace")
    p.add_argument("--out", type=Path, help="output folder (default: results/profile-<timestamp>)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    def body() -> int:
        args = build_parser().parse_args(argv)
        for name in ("batch_size", "steps", "wait", "warmup", "top_k"):
            cli.bounded(getattr(args, name), f"--{name.replace('_', '-')}")
        if args.image_size is not None:
            cli.bounded(args.image_size, "--image-size")
        cli.not_empty(args.device, "--device")
        if args.model in list_models():  # an unknown name is refused below, naming the choices
            cli.check_image_size(args.model, args.image_size)
        config = Config(
            model=args.model,
            batch_size=args.batch_size,
            image_size=args.image_size,
            device=args.device,
            mode=cli.parse_choices(args.mode, "--mode", MODES)[0],
            precision=args.precision,
            channels_last=cli.parse_on_off(args.channels_last, "--channels-last")[0],
            compile=args.compile,
            backend=args.backend and cli.parse_choices(args.backend, "--backend", BACKENDS)[0],
        )
        validate_config(config)
        loaded = None
        if args.weights is not None:  # read and checked once, before anything is prepared
            try:
                loaded = weights.read(args.weights)
                weights.check(loaded, [config.model])
            except ValueError as exc:
                raise cli.UsageError(f"--weights: {exc}") from None
        out = args.out or Path("results") / f"profile-{cli.timestamp()}"
        t0 = time.perf_counter()
        p = run_profile(
            config,
            out,
            args.steps,
            args.wait,
            args.warmup,
            args.top_k,
            args.with_stack,
            args.tensorboard,
            args.allow_emulated,
            loaded,
        )
        print(
            f"{config.model} b{config.batch_size} {config.mode} {config.setting} on {config.device}: "
            f"step {p.step_ms:.3f} ms ({p.profiled_step_ms:.3f} ms profiled); "
            f"took {time.perf_counter() - t0:.1f} s"
        )
        print("top operators by self time:")
        for row in p.ops.head(5).itertuples():
            print(f"  {row.operator:<40} {row.self_ms:9.3f} ms  {100 * row.share:5.1f}%")
        if p.stages is not None and len(p.stages):
            big = p.stages.groupby("stage", sort=False)["ms"].sum()
            base_ms, base = p.stage_base
            print(
                f"biggest stage: {big.idxmax()} ({big.max():.3f} ms, "
                f"{100 * big.max() / base_ms:.0f}% of the {base})"
            )
        for name, path in p.paths.items():
            print(f"wrote {name}: {path}")
        return 0

    return cli.run_cli("resbench.profile", body)


if __name__ == "__main__":
    sys.exit(main())
