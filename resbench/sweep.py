"""`python -m resbench.sweep`: a grid of Configs -> a run folder of Results, tables and plots.

Every finished Result is appended and flushed to ``results.jsonl`` at once, so Ctrl-C, SIGTERM, a
crash or ``kill -9`` loses nothing finished and ``--resume`` carries on. Usage::

    python -m resbench.sweep --preset quick                       # every model, a few settings
    python -m resbench.sweep --device cuda --models resnet50 --batch-sizes 32,128 --precision fp32,bf16
    torchrun --nproc-per-node 8 -m resbench.sweep --device cuda --preset standard
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import itertools
import json
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from tqdm import tqdm

from resbench import cli, report
from resbench.env import collect_env
from resbench.isolate import Worker
from resbench.measure import (
    COMPILE_MODES,
    MODES,
    PRECISIONS,
    Config,
    Result,
    measure,
    utc_now,
    validate_config,
)
from resbench.models import list_models

IMAGENET, CIFAR = list_models("imagenet"), list_models("cifar")


def _settings(labels: str) -> list[dict]:
    return cli.parse_settings(labels, "settings")


# A preset is a union of grids; a grid is a product of these lists (settings: exact combinations
# of precision, channels_last and compile, instead of their product).
PRESETS: dict[str, list[dict]] = {
    # ~3 minutes on a 2-core CPU: every variant once, then settings on a few
    "quick": [
        dict(models=IMAGENET + CIFAR, batch_sizes=[1]),
        dict(models=["resnet18", "resnet50"], batch_sizes=[1, 8], precision=["fp32", "bf16"],
             channels_last=[False, True]),
        dict(models=["small_resnet20", "small_resnet56"], batch_sizes=[32, 128],
             modes=["inference", "train"], precision=["fp32", "bf16"], channels_last=[False, True]),
        dict(models=["resnet18"], batch_sizes=[8], modes=["train"]),
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
        dict(models=["resnet50"], batch_sizes=[256], modes=["train"],
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
EXIT_INCOMPLETE = 3  # --max-minutes ended the run with Configs left (2 is a usage error)
CUDA_TIMEOUT_S = 900.0  # per Config in an isolated worker: max-autotune can compile for minutes


def expand(
    devices: Sequence[str],
    models: Sequence[str],
    batch_sizes: Sequence[int],
    modes: Sequence[str] = ("inference",),
    precision: Sequence[str] = ("fp32",),
    channels_last: Sequence[bool] = (False,),
    compile: Sequence[str] = ("off",),
    settings: Sequence[dict] | None = None,
) -> list[Config]:
    """The product of the lists, ordered so that batch sizes of one setting ascend together.

    ``settings`` (dicts of precision, channels_last, compile) replaces the product of those three.
    """
    if settings is None:
        settings = [
            {"precision": p, "channels_last": cl, "compile": co}
            for p, cl, co in itertools.product(precision, channels_last, compile)
        ]
    return [
        Config(model=m, batch_size=b, device=d, mode=mo, **s)
        for d, m, mo, s, b in itertools.product(devices, models, modes, settings, batch_sizes)
    ]


def build_grid(args) -> tuple[list[Config], list[str]]:
    """The Configs to run, and notes on combinations dropped as unsupported on a device."""
    devices = cli.parse_devices(args.device)
    grids = [dict(g) for g in PRESETS[args.preset]] if args.preset else [{}]
    explicit = {
        "models": args.models and cli.parse_models(args.models),
        "batch_sizes": args.batch_sizes
        and cli.parse_positive_ints(args.batch_sizes, "--batch-sizes"),
        "modes": args.modes and cli.parse_choices(args.modes, "--modes", MODES),
        "precision": args.precision
        and cli.parse_choices(args.precision, "--precision", PRECISIONS),
        "channels_last": args.channels_last
        and cli.parse_on_off(args.channels_last, "--channels-last"),
        "compile": args.compile and cli.parse_choices(args.compile, "--compile", COMPILE_MODES),
        "settings": args.settings and cli.parse_settings(args.settings, "--settings"),
    }
    if args.settings and (args.precision or args.channels_last or args.compile):
        raise cli.UsageError(
            "--settings replaces --precision, --channels-last and --compile; give one or the other"
        )
    if not args.preset:
        explicit["models"] = explicit["models"] or cli.parse_models(
            "resnet18,resnet50,small_resnet20"
        )
        explicit["batch_sizes"] = explicit["batch_sizes"] or [1, 32]
    configs: list[Config] = []
    for grid in grids:
        grid.update({k: v for k, v in explicit.items() if v})  # flags narrow or override a preset
        if explicit["settings"]:
            for axis in ("precision", "channels_last", "compile"):
                grid.pop(axis, None)
        elif any(explicit[axis] for axis in ("precision", "channels_last", "compile")):
            grid.pop("settings", None)  # the three flags replace a preset's settings
        configs += expand(devices, **grid)
    configs = list({c.key(): c for c in configs}.values())
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
    notes = [f"dropped {n} Config(s): {why}" for why, n in dropped.items()]
    return kept, notes


# ----------------------------------------------------------------------------- running


def _series(config: Config) -> tuple:
    """Configs that differ only in batch size: an OOM at one batch skips the larger ones."""
    return (config.device, config.model, config.image_size, config.mode, config.setting)


class ResultLog:
    """Appends Results to a JSON-lines file, flushed and fsynced one by one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        report.repair_jsonl(path)
        self._file = path.open("a", encoding="utf-8")

    def append(self, result: Result) -> None:
        self._file.write(json.dumps(result.to_dict()) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def summary_line(r: Result) -> str:
    head = f"{r.model:<16} b={r.batch_size:<4} {r.device:<6} {r.mode:<9} {r.setting:<22}"
    if r.status != "ok":
        return f"{head} {r.status}: {(r.error or '')[:80]}"
    mem = f"{r.peak_memory_mb:8.0f} MB" if r.peak_memory_mb is not None else "       - MB"
    noisy = " (noisy)" if r.noisy else ""
    return f"{head} {r.throughput_ips:10.1f} img/s {r.latency_ms_median:9.3f} ms {mem}  ok{noisy}"


def run_grid(
    configs: Sequence[Config],
    log: ResultLog,
    done: Iterable[Result] = (),
    run: Callable[[Config], Result] | None = None,
    deadline: float | None = None,
    progress: bool = True,
) -> tuple[list[Result], int]:
    """Measure each Config not already done; returns the new Results and how many were left undone.

    An OOM marks larger batch sizes of the same setting as "skipped". KeyboardInterrupt propagates
    after the finished Results are on disk.
    """
    run = run or measure
    done_keys = {r.key() for r in done}
    oom_at: dict[tuple, int] = {}
    for r in done:
        if r.status == "oom":
            oom_at[_series(r)] = min(oom_at.get(_series(r), r.batch_size), r.batch_size)
    todo = [c for c in configs if c.key() not in done_keys]
    new: list[Result] = []
    bar = tqdm(todo, desc="sweep", unit="cfg", disable=not progress, dynamic_ncols=True)
    for i, config in enumerate(bar):
        if deadline is not None and time.monotonic() > deadline:
            return new, len(todo) - i
        bar.set_postfix_str(f"{config.model} b{config.batch_size} {config.mode} {config.setting}")
        limit = oom_at.get(_series(config))
        if limit is not None and config.batch_size > limit:
            result = Result.for_config(
                config,
                status="skipped",
                error=f"batch {limit} already ran out of memory",
                timestamp=utc_now(),
            )
        else:
            result = run(config)
        log.append(result)
        new.append(result)
        if result.status == "oom":
            oom_at[_series(config)] = min(
                oom_at.get(_series(config), config.batch_size), config.batch_size
            )
        (bar.write if progress else print)(summary_line(result))
    return new, 0


def find_max_batch(
    config: Config, run: Callable[[Config], Result], cap: int = 1 << 16, tolerance: float = 1 / 16
) -> tuple[int | None, list[Result]]:
    """The largest batch size of ``config``'s setting that runs: doubling from its batch, then bisecting.

    Bisection stops when the gap is within ``tolerance`` of the batch that fits. Any status but "ok"
    (an OOM, or an error at that size) counts as not fitting. Returns (largest fitting batch or None,
    every probe's Result).
    """
    probes: list[Result] = []

    def fits(batch: int) -> bool:
        probes.append(run(dataclasses.replace(config, batch_size=batch)))
        return probes[-1].status == "ok"

    lo, hi, batch = 0, None, config.batch_size
    while batch <= cap:
        if not fits(batch):
            hi = batch
            break
        lo, batch = batch, batch * 2
    if hi is None:
        return lo, probes
    if lo == 0:  # the starting batch did not fit: double up from 1 instead
        batch = 1
        while batch < hi and fits(batch):
            lo, batch = batch, batch * 2
        if lo == 0:
            return None, probes
        hi = min(hi, batch)
    while hi - lo > max(1, int(lo * tolerance)):
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo, probes


def max_batch_searches(
    configs: Sequence[Config],
    log: ResultLog,
    done: Iterable[Result],
    run: Callable[[Config], Result],
) -> list[dict]:
    """find_max_batch for every model and setting of the grid, from its largest batch; probes are
    logged like any Result, and ones already logged (a resumed run) are not run again."""
    recorded = {r.key(): r for r in done}

    def run_logged(config: Config) -> Result:
        if config.key() in recorded:
            return recorded[config.key()]
        result = run(config)
        log.append(result)
        recorded[config.key()] = result
        print(summary_line(result), flush=True)
        return result

    largest: dict[tuple, Config] = {}
    for c in configs:
        if _series(c) not in largest or c.batch_size > largest[_series(c)].batch_size:
            largest[_series(c)] = c
    found = []
    for config in largest.values():
        best, probes = find_max_batch(config, run_logged)
        found.append({"model": config.model, "device": config.device, "mode": config.mode,
                      "setting": config.setting, "image_size": config.image_size,
                      "max_batch": best, "probes": len(probes)})  # fmt: skip
    return found


def estimate_minutes(configs: Sequence[Config], budget_s: float, isolate: bool) -> float:
    # warm-up settles in about one budget; an isolated worker adds one Python + torch start-up
    per = 2 * budget_s + 1.0
    start = 5.0 if isolate and configs else 0.0
    return (start + sum(per + (40.0 if c.compile != "off" else 0.0) for c in configs)) / 60


# ----------------------------------------------------------------------------- distributed


def _dist_setup():
    """(rank, world, local_rank) under torchrun, with a gloo group for coordination; else (0, 1, 0)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    import torch.distributed as dist

    # gloo only coordinates (barrier, broadcast of the run folder); no tensors cross ranks
    dist.init_process_group("gloo", timeout=_dt.timedelta(hours=48))
    return dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0"))


def _rank_device(device: str, local_rank: int, world: int) -> str:
    if world > 1 and device == "cuda":
        return f"cuda:{local_rank}"
    return device


def merge_parts(out: Path, world: int) -> int:
    """Append every rank's part to results.jsonl (skipping what is there already); remove the parts."""
    log = ResultLog(out / report.RESULTS_FILE)
    have = {r.key() for r in report.read_results(out)}
    added = 0
    for rank in range(world):
        part = out / "parts" / f"rank{rank}.jsonl"
        for row in report.read_jsonl(part):
            r = Result.from_dict(row)
            if r.key() not in have:
                log.append(r)
                have.add(r.key())
                added += 1
    log.close()
    parts = sorted(out.glob("max_batch.rank*.json"))
    if parts:
        found = [row for part in parts for row in json.loads(part.read_text())]
        (out / report.MAX_BATCH_FILE).write_text(json.dumps(found, indent=2) + "\n")
        for part in parts:
            part.unlink()
    for rank in range(world):
        (out / "parts" / f"rank{rank}.jsonl").unlink(missing_ok=True)
    if (out / "parts").exists() and not any((out / "parts").iterdir()):
        (out / "parts").rmdir()
    return added


# ----------------------------------------------------------------------------- command line


def build_parser() -> cli.Parser:
    p = cli.Parser(
        prog="python -m resbench.sweep",
        description="Measure a grid of ResNet Configs into a run folder (results.jsonl, CSV, "
        "summary.md, plots).",
    )
    what = p.add_argument_group("what to measure (lists are comma-separated)")
    cli.add_device(what, many=True)
    what.add_argument(
        "--preset", choices=sorted(PRESETS), help="a named grid; flags below narrow it"
    )
    what.add_argument(
        "--models",
        help="names, or groups all, imagenet, cifar (default: resnet18,resnet50,small_resnet20)",
    )
    what.add_argument("--batch-sizes", help="positive integers (default: 1,32)")
    what.add_argument("--modes", help="inference, train (default: inference)")
    what.add_argument("--precision", help=f"{', '.join(PRECISIONS)} (default: fp32)")
    what.add_argument("--channels-last", help="off, on (default: off)")
    what.add_argument("--compile", help=f"{', '.join(COMPILE_MODES)} (default: off)")
    what.add_argument(
        "--settings",
        help="exact settings instead of the product of the three flags above, labelled as in the "
        "tables: fp32, tf32+cl, bf16+cl+compile, fp16+cl+max-autotune",
    )
    how = p.add_argument_group("how")
    how.add_argument(
        "--budget",
        type=float,
        default=DEFAULT_BUDGET_S,
        help="seconds of measuring per Config, after warm-up (default: %(default)s)",
    )
    how.add_argument(
        "--isolate",
        choices=["auto", "on", "off"],
        default="auto",
        help="measure in a worker process, replaced after a crash, a hang (--timeout) or an "
        "error, so a poisoned CUDA context stays there (default: auto = on for CUDA, off otherwise)",
    )
    how.add_argument(
        "--timeout",
        type=float,
        default=CUDA_TIMEOUT_S,
        help="per-Config limit in seconds for isolated workers (default: %(default)s)",
    )
    how.add_argument(
        "--max-minutes",
        type=float,
        help="start no new Config after this many minutes; exit code 3 if some were left",
    )
    how.add_argument(
        "--find-max-batch",
        action="store_true",
        help="after the grid, search each model and setting for the largest batch that fits "
        "(doubling from the largest --batch-sizes, then bisecting to within 1/16); CUDA or MPS only",
    )
    how.add_argument("--no-progress", action="store_true", help="no progress bar (lines only)")
    where = p.add_argument_group("where")
    where.add_argument(
        "--out", type=Path, help="run folder (default: results/<timestamp>-<device>)"
    )
    where.add_argument(
        "--resume", action="store_true", help="continue the run in --out, skipping finished Configs"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run_cli("resbench.sweep", lambda: _run(build_parser().parse_args(argv), argv))


def _run(args, argv) -> int:
    if args.budget <= 0:
        raise cli.UsageError(f"--budget must be positive; got {args.budget}")
    if args.max_minutes is not None and args.max_minutes <= 0:
        raise cli.UsageError(f"--max-minutes must be positive; got {args.max_minutes}")
    if args.resume and args.out is None:
        raise cli.UsageError("--resume needs --out RUN_FOLDER (the run to continue)")
    if args.resume and not (args.out / report.RESULTS_FILE).exists():
        raise cli.UsageError(f"--resume: {args.out} has no {report.RESULTS_FILE} to continue")
    configs, notes = build_grid(args)
    if args.find_max_batch and any(c.device == "cpu" for c in configs):
        raise cli.UsageError(
            "--find-max-batch needs a CUDA or MPS device: CPU memory is overcommitted, so the "
            "kernel kills the process instead of raising out-of-memory"
        )
    rank, world, local_rank = _dist_setup()
    if world > 1:
        configs = [
            dataclasses.replace(c, device=_rank_device(c.device, local_rank, world))
            for c in configs[rank::world]
        ]
    devices = sorted({c.device for c in configs})
    out = (
        args.out
        or Path("results")
        / f"{cli.timestamp()}-{'+'.join(d.replace(':', '') for d in devices) or 'cpu'}"
    )
    if world > 1:
        import torch.distributed as dist

        box = [str(out)]
        dist.broadcast_object_list(box, src=0)  # every rank writes into rank 0's folder
        out = Path(box[0])
    out.mkdir(parents=True, exist_ok=True)
    command = "python -m resbench.sweep " + shlex.join(sys.argv[1:] if argv is None else argv)
    if rank == 0 and not (args.resume and (out / report.ENV_FILE).exists()):
        env = collect_env() | {"command": command, "world_size": world}
        (out / report.ENV_FILE).write_text(json.dumps(env, indent=2) + "\n")

    isolate = args.isolate == "on" or (
        args.isolate == "auto" and any(d.startswith("cuda") for d in devices)
    )
    worker = Worker(args.timeout) if isolate else None
    peaks: dict[tuple, float] = {}

    def run_one(config: Config) -> Result:
        peak = peaks.get((config.device, config.precision), True)
        if worker is not None:
            result = worker.measure(config, args.budget, peak)
        else:
            result = measure(config, args.budget, peak=peak)
        if result.peak_tflops:
            peaks[(config.device, config.precision)] = result.peak_tflops
        return result

    path = out / report.RESULTS_FILE if world == 1 else out / "parts" / f"rank{rank}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    done = report.read_results(out) + (report.read_results_file(path) if world > 1 else [])
    done_keys = {r.key() for r in done}
    todo = [c for c in configs if c.key() not in done_keys]
    for note in notes:
        print(note, file=sys.stderr)
    already = f" ({len(configs) - len(todo)} already done)" if len(todo) < len(configs) else ""
    print(
        f"{f'rank {rank}/{world}: ' if world > 1 else ''}planned {len(configs)} Configs, "
        f"{len(todo)} to run{already}, ETA about {estimate_minutes(todo, args.budget, isolate):.1f} min "
        f"(isolate={'on' if isolate else 'off'}) -> {out}",
        flush=True,
    )
    log = ResultLog(path)
    deadline = time.monotonic() + 60 * args.max_minutes if args.max_minutes else None
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    resume_hint = (
        f"resume with: python -m resbench.sweep --resume --out {shlex.quote(str(out))} ..."
    )
    start = time.monotonic()
    try:
        new, left = run_grid(configs, log, done, run_one, deadline, progress=not args.no_progress)
        if args.find_max_batch and not left:
            found = max_batch_searches(configs, log, done + new, run_one)
            name = report.MAX_BATCH_FILE if world == 1 else f"max_batch.rank{rank}.json"
            (out / name).write_text(json.dumps(found, indent=2) + "\n")
    except KeyboardInterrupt:
        if worker is not None:
            worker.close(kill=True)  # the Config in flight is lost either way
        log.close()
        finished = len(report.read_results(out))
        print(
            f"\ninterrupted; {finished} finished Results are in {out}; {resume_hint}",
            file=sys.stderr,
        )
        if rank == 0 and world == 1:
            report.write_report(out)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        if worker is not None:
            worker.close()
    log.close()
    wall = time.monotonic() - start
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        if rank == 0:
            merge_parts(out, world)
        dist.barrier()
        dist.destroy_process_group()
    if rank != 0:
        return EXIT_INCOMPLETE if left else 0
    paths = report.finish_run(out, devices)  # bandwidth probe into env.json, report.html
    measured = sum((r.warmup_s or 0) + (r.measure_s or 0) for r in new)
    print(
        f"finished {len(new)} Configs in {wall:.1f} s ({measured:.1f} s warming up and measuring); "
        f"wrote {paths['summary']}"
    )
    if left:
        print(f"stopped by --max-minutes with {left} Configs left; {resume_hint}", file=sys.stderr)
        return EXIT_INCOMPLETE
    return 0


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    raise SystemExit(main())
