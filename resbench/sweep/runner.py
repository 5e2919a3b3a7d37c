"""`python -m resbench.sweep`: a grid of Configs -> a run folder of Results, tables and plots.

Every finished Result is appended and flushed to ``results.jsonl`` at once, so Ctrl-C, SIGTERM, a
crash or ``kill -9`` loses nothing finished and ``--resume`` carries on: the grid is kept in
``run.json``, and Configs that ended in error are measured again. One sweep at a time writes to a
run folder (a lock). ``--forks N`` (2 by default) runs the grid N times, each pass in a fresh worker
process, and each Config's row combines its forks (``forks.py``). Usage::

    python -m resbench.sweep --preset quick                       # every model, a few settings
    python -m resbench.sweep --device cuda --models resnet50 --batch-sizes 32,128 --precision fp32,bf16
    torchrun --nproc-per-node 8 -m resbench.sweep --device cuda --preset standard
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from resbench import cli, data, report, runfolder, weights
from resbench.engine import evaluate
from resbench.engine.measure import Config, Result, measure
from resbench.env import collect_env
from resbench.runfolder import ResultLog
from resbench.sweep import eta, flags, forks, grid, ranks
from resbench.sweep.forks import summary_line
from resbench.sweep.grid import build_grid
from resbench.sweep.isolate import Worker
from resbench.sweep.maxbatch import max_batch_searches

EVAL_FILE = "eval.json"  # --eval-data: the scored images' indices, classes and how they were chosen
EXIT_INCOMPLETE = 3  # --max-minutes ended the run with Configs left (2 is a usage error)
EXIT_ERRORS = 4  # the grid ran to its end, but some Configs ended in error (--resume retries them)
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM: finished Results are kept
EXIT_CODES = f"""exit codes:
  0    every Config of the grid has a Result, none of them an error (oom and skipped are data)
  {cli.EXIT_IO}    a file could not be read or written (full or read-only disk); the path is named
  {cli.EXIT_USAGE}    a usage error: bad flags, a run folder in use or already holding a run
  {EXIT_INCOMPLETE}    --max-minutes stopped the run with Configs left; --resume continues it
  {EXIT_ERRORS}    some Configs ended in error; --resume measures them again
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C, SIGTERM); finished Results are kept; --resume continues
"""


# ----------------------------------------------------------------------------- command line


def build_parser() -> cli.Parser:
    return flags.build_parser(EXIT_CODES)


def main(argv: Sequence[str] | None = None) -> int:
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)  # SIGTERM ends a run as Ctrl-C does
    try:
        return cli.run_cli("resbench.sweep", lambda: _run(build_parser().parse_args(argv), argv))
    except KeyboardInterrupt:  # before the run folder exists, or after its report
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclasses.dataclass
class _Plan:
    """What one invocation runs, and where."""

    configs: list[Config]
    out: Path
    rank: int
    world: int
    isolate: bool
    command: str
    options: dict  # the grid and run flags as given (after a resume's merge), for run.json
    resume: bool
    evaluation: evaluate.Spec | None = None  # --eval-data: what every inference row is scored on
    shared_cores: dict | None = None  # CPU ranks of torchrun sharing this host (ranks.py)
    started: float = dataclasses.field(default_factory=time.monotonic)


def _run(args, argv) -> int:
    notes = _check_args(args)
    plan = _plan(args, argv, notes)
    with contextlib.ExitStack() as stack:
        if plan.rank == 0:
            stack.enter_context(runfolder.locked(plan.out))
            _record(plan)
        try:
            passes = _measure_grid(args, plan, notes)
        except KeyboardInterrupt:
            return _interrupted(plan)
        return _finish(plan, passes)


def _check_args(args) -> list[str]:
    """Refuse nonsense flags; with --resume, take the flags not given from the run's record."""
    for name in ("budget", "timeout", "max_minutes", "repeats", "forks", "wait_quiet", "eval_images",
                 "calibration_images", "max_accuracy_drop"):  # fmt: skip
        if getattr(args, name) is not None:
            cli.bounded(getattr(args, name), "--" + name.replace("_", "-"))
    if args.keep_errors and not args.resume:
        raise cli.UsageError(
            "--keep-errors keeps a resumed run's errors, so it needs --resume (a new run has none)"
        )
    if args.resume and args.out is None:
        raise cli.UsageError("--resume needs --out RUN_FOLDER (the run to continue)")
    notes: list[str] = []
    if args.out is not None and args.out.is_dir():
        runfolder.check_free(args.out)  # a run in progress is named as such, with its PID
    if args.resume:
        if not runfolder.holds_run(args.out):
            raise cli.UsageError(
                f"--resume: {args.out} has no {runfolder.RESULTS_FILE} or {runfolder.RUN_FILE} to "
                "continue"
            )
        notes += grid.resume_options(
            args, runfolder.recorded_options(args.out), _measured(args.out)
        )
    elif args.out is not None and runfolder.holds_run(args.out):
        raise cli.UsageError(
            f"{args.out} already holds a run; continue it with --resume --out {args.out}, or "
            "choose another --out"
        )
    return notes


def _measured(out: Path) -> int:
    """How many Results in ``out`` hold a measured number (status ok); silent, as a damaged line
    is reported once, when the log opens (a truncated last line is cut there, with its warning)."""
    return sum(r.status == "ok" for r in runfolder.read_results(out, warn=False))


def _plan(args, argv, notes: list[str]) -> _Plan:
    options = grid.options_of(args)
    grid.apply_defaults(args)
    options["forks"] = args.forks  # as resolved: --isolate off's default is 1 fork (grid.py)
    configs, dropped = build_grid(args)
    notes += dropped
    # read once, here: a bad file fails no Config, it stops the run
    loaded = _check_weights(args.weights, [c.model for c in configs]) if args.weights else None
    if args.find_max_batch and any(c.device == "cpu" for c in configs):
        raise cli.UsageError(
            "--find-max-batch needs a CUDA or MPS device: CPU memory is overcommitted, so the "
            "kernel kills the process instead of raising out-of-memory"
        )
    rank, world, local_rank = ranks.setup()
    shared = ranks.shared_cores({c.device for c in configs}, world)  # the whole grid's devices
    if world > 1:
        configs = [
            dataclasses.replace(c, device=ranks.rank_device(c.device, local_rank, world))
            for c in configs[rank::world]
        ]
    devices = sorted({c.device for c in configs})
    out = args.out or Path("results") / (
        f"{cli.timestamp()}-{'+'.join(d.replace(':', '') for d in devices) or 'cpu'}"
    )
    if world > 1:
        import torch.distributed as dist

        box = [str(out)]
        dist.broadcast_object_list(box, src=0)  # every rank writes into rank 0's folder
        out = Path(box[0])
    isolate = args.isolate == "on" or (  # each fork is a fresh worker (grid.apply_defaults)
        args.isolate == "auto" and (args.forks > 1 or any(d.startswith("cuda") for d in devices))
    )
    command = "python -m resbench.sweep " + shlex.join(sys.argv[1:] if argv is None else argv)
    evaluation = _evaluation(args, configs, loaded)
    return _Plan(configs, out, rank, world, isolate, command, options, args.resume, evaluation,
                 shared)  # fmt: skip


def _evaluation(args, configs: list[Config], w: weights.Weights | None) -> evaluate.Spec | None:
    """--eval-data read and checked once, before the first Config, against every model of the
    grid (with the --weights already read, ``w``): a folder it cannot score them on is one line
    and exit 2, and so is no --weights: He-initialised weights score chance (top-1 about one in
    the classes), which would name a "fastest within the bound" among settings all at chance."""
    if args.eval_data is None:
        return None
    if not Path(args.eval_data).exists():
        raise cli.UsageError(f"--eval-data: no such folder {args.eval_data!r}")
    try:
        spec = evaluate.plan(
            args.eval_data, args.eval_images, w, args.calibration, args.calibration_images
        )
        for model, size in dict.fromkeys((c.model, c.image_size) for c in configs):
            fits = w is not None and w.fits(model) is None
            evaluate.check(spec, model, size, w.overrides() if fits else None)
    except data.DataError as exc:
        raise cli.UsageError(f"--eval-data: {exc}") from None
    if w is None:  # after the folder's checks, which hold whatever the weights
        raise cli.UsageError(
            "--eval-data scores trained weights, and without --weights every model is "
            "He-initialised (top-1 at chance): give --weights a state dict or trainer checkpoint "
            "trained on these images"
        )
    return spec


def _check_weights(path: str, models: list[str]) -> weights.Weights:
    """The --weights file, read; one line and exit 2 when it cannot be read or does not fit every
    model of the grid."""
    try:
        loaded = weights.read(path)
        weights.check(loaded, models)
    except ValueError as exc:
        raise cli.UsageError(f"--weights: {exc}") from None
    return loaded


def _record(plan: _Plan) -> None:
    """Append this invocation to run.json; the environment is written once, at the start."""
    runfolder.record_invocation(plan.out, plan.command, plan.options, plan.resume)
    if plan.evaluation is not None:  # which images were scored, and how they were chosen
        spec = plan.evaluation
        ds = evaluate.dataset(spec.path, spec.dataset, plan.configs[0].image_size)
        chosen = evaluate.choose(ds.count("test"), spec.images, spec.seed).tolist()
        record = {"spec": spec.to_dict(), "classes": list(ds.classes), "indices": chosen}
        runfolder.write_atomic(plan.out / EVAL_FILE, json.dumps(record) + "\n")
    shared = {"shared_cores": plan.shared_cores} if plan.shared_cores else {}
    if shared:
        print(f"warning: {plan.shared_cores['warning']}", file=sys.stderr, flush=True)
    if not (plan.out / runfolder.ENV_FILE).exists():
        env = collect_env() | {"command": plan.command, "world_size": plan.world} | shared
        runfolder.write_atomic(plan.out / runfolder.ENV_FILE, json.dumps(env, indent=2) + "\n")
    elif shared:  # a resume under torchrun: the first invocation's environment, and this
        env = runfolder.read_env(plan.out) | shared
        runfolder.write_atomic(plan.out / runfolder.ENV_FILE, json.dumps(env, indent=2) + "\n")


def _measure_grid(args, plan: _Plan, notes: list[str]) -> forks.Passes:
    """Run every fork of every Config not done yet (an error is not done, unless --keep-errors)."""
    out, rank, world = plan.out, plan.rank, plan.world
    path = out / runfolder.RESULTS_FILE if world == 1 else out / "parts" / f"rank{rank}.jsonl"
    # the log opens first, so that a truncated last line is reported once, as it is cut
    with ResultLog(path) as log:
        rows = runfolder.read_results_file(out / runfolder.RESULTS_FILE) + (
            runfolder.read_results_file(path) if world > 1 else []
        )
        for note in notes:
            print(note, file=sys.stderr)
        _announce(args, plan, forks.fork_state(rows, args.keep_errors))
        deadline = time.monotonic() + 60 * args.max_minutes if args.max_minutes else None
        options = {
            "repeats": args.repeats,
            "wait_quiet_s": args.wait_quiet,
            "weights": args.weights,
            "allow_emulated": args.allow_emulated,
            "evaluation": plan.evaluation and plan.evaluation.to_dict(),
        }
        # --weights was checked against every model of the grid; the budget is the Config's,
        # shared by its forks (and, inside measure(), by the repeats of each)
        run_one = _measurer(args.budget / args.forks, options)

        def new_worker():
            return Worker(args.timeout) if plan.isolate else contextlib.nullcontext()

        cost = (args.budget, args.repeats, args.forks, args.allow_emulated)
        passes = forks.run_passes(plan.configs, log, rows, args.forks, run_one, new_worker,
                                  deadline, not args.no_progress, args.keep_errors,
                                  lambda c: eta.fork_s(c, *cost),
                                  lambda todo: eta.startup_s(todo, plan.isolate, args.forks,
                                                             args.allow_emulated))  # fmt: skip
        if args.find_max_batch and not passes.left:
            with new_worker() as worker:
                found = max_batch_searches(
                    plan.configs,
                    log,
                    runfolder.latest([*rows, *passes.rows]),
                    lambda c: run_one(c, worker),
                    lambda r: print(summary_line(r), flush=True),
                )
            name = runfolder.MAX_BATCH_FILE if world == 1 else f"max_batch.rank{rank}.json"
            runfolder.write_atomic(out / name, json.dumps(found, indent=2) + "\n")
    return passes


def _announce(args, plan: _Plan, state: dict) -> None:
    todo = [c for c in plan.configs if forks.forks_left(state, c, args.forks)]
    n = len(plan.configs)
    already = f" ({n - len(todo)} already done)" if len(todo) < n else ""
    per = f" x {args.forks} forks" if args.forks > 1 else ""
    seconds = eta.estimate_s(
        todo, args.budget, plan.isolate, args.repeats, args.forks, args.allow_emulated
    )
    rank = f"rank {plan.rank}/{plan.world}: " if plan.world > 1 else ""
    print(
        f"{rank}planned {cli.plural(n, 'Config')}{per}, {len(todo)} to run{already}, "
        f"ETA about {seconds / 60:.1f} min (isolate={'on' if plan.isolate else 'off'}) -> {plan.out}",
        flush=True,
    )


def _measurer(budget_s: float, options: dict) -> Callable[..., Result]:
    """measure(), in the worker when there is one, with each device's peak probed once (and
    passed on to later workers, with the probe's name)."""
    peaks: dict[tuple, tuple[float | bool, str | None]] = {}

    def run_one(config: Config, worker: Worker | None = None, **extra) -> Result:
        peak, probe = peaks.get((config.device, config.precision), (True, None))
        if worker is not None:
            result = worker.measure(config, budget_s, peak, peak_probe=probe, **options, **extra)
        else:
            result = measure(config, budget_s, peak=peak, peak_probe=probe, **options, **extra)
        if result.peak_tflops:
            peaks[(config.device, config.precision)] = (result.peak_tflops, result.peak_probe)
        return result

    return run_one


def _resume_hint(out: Path) -> str:
    return f"resume with: python -m resbench.sweep --resume --out {shlex.quote(str(out))}"


def _interrupted(plan: _Plan) -> int:
    """Ctrl-C or SIGTERM mid-grid: say what is kept and how to go on; report what is there."""
    finished = len(runfolder.read_results(plan.out))
    print(
        f"\ninterrupted; {plan.out} keeps {cli.plural(finished, 'finished Result')}; "
        f"{_resume_hint(plan.out)}",
        file=sys.stderr,
    )
    if plan.rank == 0 and plan.world == 1:
        with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C skips the report
            report.write_report(plan.out)
    return EXIT_INTERRUPTED


def _finish(plan: _Plan, passes: forks.Passes) -> int:
    """Merge the ranks' parts, write the report, and choose the exit code."""
    out, rank, world, left = plan.out, plan.rank, plan.world, passes.left
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        if rank == 0:
            runfolder.merge_parts(out, world)
        dist.barrier()
        dist.destroy_process_group()
    if rank != 0:
        return EXIT_INCOMPLETE if left else 0
    try:
        # the bandwidth probe into env.json, then summary.md, plots and report.html
        paths = report.finish_run(out, sorted({c.device for c in plan.configs}))
    except KeyboardInterrupt:
        print(
            f"\ninterrupted while writing the report; every Result is in {out}; "
            f"python -m resbench.report {shlex.quote(str(out))} writes it",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    wall = time.monotonic() - plan.started
    done = len({r.key() for r in passes.rows})
    print(f"finished {cli.plural(done, 'Config')} in {wall:.1f} s ({passes.measured_s:.1f} s "
          f"warming up and measuring); wrote {paths['summary']}")  # fmt: skip
    warning = report.load_warning(runfolder.read_results(out), os.cpu_count())
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    if left:
        print(f"stopped by --max-minutes with {cli.plural(left, 'Config')} left; {_resume_hint(out)}",
              file=sys.stderr)  # fmt: skip
        return EXIT_INCOMPLETE
    keys = {c.key() for c in plan.configs}
    failed = [
        r
        for r in runfolder.read_results(out)
        if r.status == "error" and (world > 1 or r.key() in keys)
    ]
    if failed:
        print(f"{cli.plural(len(failed), 'Config')} ended in error (listed in {paths['summary']}); "
              f"{_resume_hint(out)} measures them again", file=sys.stderr)  # fmt: skip
        return EXIT_ERRORS
    return 0


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    raise SystemExit(main())
