"""Is resbench's clock right? measure() and the sweep against a user's own loop, over fresh processes.

    python scripts/clock_check.py --device cpu [--processes 4] [--pytest-benchmark] [--out clock.json]

One inference Config (default resnet18, batch 8, fp32; on a GPU pick one that is not launch-bound,
e.g. ``--model resnet50 --batch-size 128 --setting tf32``). Each check runs in fresh processes,
since what differs between processes (where memory lands, what the allocator holds) is what a check
inside one process cannot see. Targets: every ratio within 5% in every process.

1. In one process: the user's model and input, built by the caller outside ``prepare()``, timed
   by ``torch.utils.benchmark.Timer.blocked_autorange`` and by a bare ``perf_counter`` loop, and
   ``measure()`` on the same Config, in an order that rotates each round. Ratios of medians.
2. Process against process: ``python -m resbench.sweep`` for the Config against a fresh process
   running only the user's plain loop, alternating which goes first. The plain loop runs twice:
   with the allocator policy resbench uses (``GLIBC_TUNABLES``, the like-for-like comparison the
   target is about), and with glibc's default, to show what the allocator costs a plain process
   here (its page faults per iteration are recorded).
3. Harness overhead: a 1x1 convolution on a tiny input, ``measure()``'s timing loop against a bare
   loop around the same call. Target: a few microseconds.
4. With --pytest-benchmark: the same Config through ``pytest benchmarks``. Target: within 10%.

Between processes: each kind of process above (measure(), Timer and the bare loop in the
in-process children; the sweep; the plain loops) gives one number per fresh process, and their
spread, (max - min) / median, is what a second process of that kind could read differently: the
variance that ``--forks`` shows and one process's ``--repeats`` cannot. It is reported beside the
spread of measure() inside one process (its rounds), with no target: a measurement of the host.

With --strict the exit code is 1 when a target is missed (else a miss is only reported: a
measurement, not a failure of the check).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.benchmark import Timer

from resbench.cli import parse_settings
from resbench.engine import devices, timing
from resbench.engine.measure import Config, measure
from resbench.env import collect_env
from resbench.models import build_model
from resbench.settings import autocast, numerics

ROOT = Path(__file__).resolve().parent.parent
TOLERANCE = 0.05  # every measure()/reference ratio within 5%
PLAIN_ITERS_MIN_S = 2.0  # the plain loop times at least this long (and 10 iterations)
# what resbench's steady_allocator() does, as an environment variable for a process it does not run
STEADY_TUNABLES = ":".join(
    f"glibc.malloc.{name}={devices.STEADY_THRESHOLD_BYTES}"
    for name in ("mmap_threshold", "trim_threshold")
)


def user_model(config: Config) -> tuple[torch.nn.Module, torch.Tensor]:
    """The model and input as a user builds them, outside prepare()."""
    fmt = torch.channels_last if config.channels_last else torch.contiguous_format
    model = build_model(config.model).to(config.device, memory_format=fmt).eval()
    x = torch.randn(
        config.batch_size, 3, config.image_size, config.image_size, device=config.device
    )
    return model, x.contiguous(memory_format=fmt)


def user_step(config: Config, model: torch.nn.Module, x: torch.Tensor):
    device = torch.device(config.device)

    def step():
        with torch.inference_mode(), autocast(device, config.precision):
            return model(x)

    return step


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def bare_loop_ms(step, device: torch.device, min_s: float, min_iters: int = 10) -> list[float]:
    """Per-iteration times of a plain perf_counter loop (synchronising each iteration on a GPU)."""
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_iters or time.perf_counter() - start < min_s:
        t0 = time.perf_counter()
        step()
        timing.synchronize(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def in_process(config: Config, rounds: int, budget: float) -> dict:
    """Child: the user's loop under Timer and a bare loop, and measure(), in rotating order."""
    device = torch.device(config.device)
    model, x = user_model(config)
    step = user_step(config, model, x)
    ms: dict[str, list[float]] = {"measure": [], "timer": [], "bare": []}
    faults: list[float] = []
    with numerics(config.precision, device):
        for _ in range(3):
            step()
        timing.synchronize(device)

        def run_timer():
            timer = Timer("step()", globals={"step": step}, num_threads=torch.get_num_threads())
            before = minor_faults()
            m = timer.blocked_autorange(min_run_time=budget)
            faults.append((minor_faults() - before) / (m.number_per_run * len(m.raw_times)))
            ms["timer"].append(m.median * 1e3)

        def run_bare():
            ms["bare"].append(statistics.median(bare_loop_ms(step, device, budget)))

        def run_measure():
            ms["measure"].append(measure(config, budget, peak=False, repeats=1).latency_ms_median)

        order = [run_measure, run_timer, run_bare]
        for i in range(rounds):
            for fn in order[i % 3 :] + order[: i % 3]:
                fn()
    ratios = {
        ref: statistics.median(m / r for m, r in zip(ms["measure"], ms[ref], strict=True))
        for ref in ("timer", "bare")
    }
    return {
        "measure_ms": ms["measure"],
        "timer_ms": ms["timer"],
        "bare_ms": ms["bare"],
        "ratio_measure_over_timer": ratios["timer"],
        "ratio_measure_over_bare": ratios["bare"],
        "user_loop_faults_per_iter": statistics.median(faults),
        "allocator": devices.steady_allocator(),
    }


def plain_process(config: Config, min_s: float) -> dict:
    """Child: nothing but the user's loop in a fresh process; resbench's measuring code stays out."""
    device = torch.device(config.device)
    model, x = user_model(config)
    step = user_step(config, model, x)
    with numerics(config.precision, device):
        bare_loop_ms(step, device, min_s / 4, min_iters=3)  # warm-up
        before = minor_faults()
        times = bare_loop_ms(step, device, min_s)
    return {
        "ms": statistics.median(times),
        "faults_per_iter": (minor_faults() - before) / len(times),
    }


def child(kind: str, config: Config, args: argparse.Namespace, env: dict | None = None) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, *_config_args(config),
           "--rounds", str(args.rounds), "--budget", str(args.budget)]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def sweep_process(config: Config, budget: float) -> dict:
    with tempfile.TemporaryDirectory() as d:
        cmd = [sys.executable, "-m", "resbench.sweep", "--device", config.device,
               "--models", config.model, "--batch-sizes", str(config.batch_size),
               "--settings", config.setting, "--modes", "inference", "--budget", str(budget),
               "--isolate", "off", "--no-progress", "--out", d]  # fmt: skip
        subprocess.run(cmd, cwd=ROOT, capture_output=True, check=True)
        (line,) = Path(d, "results.jsonl").read_text().splitlines()
        r = json.loads(line)
        return {"ms": r["latency_ms_median"], "repeat_medians_ms": r.get("repeat_medians_ms")}


def _config_args(config: Config) -> list[str]:
    return ["--device", config.device, "--model", config.model, "--setting", config.setting,
            "--batch-size", str(config.batch_size)]  # fmt: skip


def between_processes(config: Config, args: argparse.Namespace) -> list[dict]:
    """Sweep processes against plain-loop processes, alternating which goes first."""
    steady = dict(os.environ, GLIBC_TUNABLES=STEADY_TUNABLES)
    system = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    pairs = []
    for i in range(args.processes):
        jobs = {
            "sweep": lambda: sweep_process(config, args.budget),
            "plain": lambda: child("plain", config, args, steady),
            "plain_system_malloc": lambda: child("plain", config, args, system),
        }
        order = list(jobs) if i % 2 == 0 else list(reversed(jobs))
        got = {name: jobs[name]() for name in order}
        pairs.append({
            "order": order,
            "sweep_ms": got["sweep"]["ms"],
            "sweep_repeat_medians_ms": got["sweep"]["repeat_medians_ms"],
            "plain_ms": got["plain"]["ms"],
            "plain_faults_per_iter": got["plain"]["faults_per_iter"],
            "plain_system_malloc_ms": got["plain_system_malloc"]["ms"],
            "plain_system_malloc_faults_per_iter": got["plain_system_malloc"]["faults_per_iter"],
            "ratio_sweep_over_plain": got["sweep"]["ms"] / got["plain"]["ms"],
            "ratio_sweep_over_plain_system_malloc": got["sweep"]["ms"]
            / got["plain_system_malloc"]["ms"],
        })  # fmt: skip
        print(f"pair {i + 1}: sweep {pairs[-1]['sweep_ms']:.2f} ms, plain loop "
              f"{pairs[-1]['plain_ms']:.2f} ms, with glibc's default malloc "
              f"{pairs[-1]['plain_system_malloc_ms']:.2f} ms "
              f"({pairs[-1]['plain_system_malloc_faults_per_iter']:.0f} page faults/iteration)",
              flush=True)  # fmt: skip
    return pairs


def tiny_overhead(device: str) -> dict:
    """measure()'s timing loop on a near-empty model vs a bare perf_counter loop around the same call."""
    conv = torch.nn.Conv2d(1, 1, 1).to(device).eval()
    x = torch.randn(1, 1, 4, 4, device=device)

    def step():
        with torch.inference_mode():
            return conv(x)

    dev = torch.device(device)
    warm, _ = timing.warmup(step, dev, max_s=1.0)
    bare = []
    for _ in range(5):
        n = 20000
        t0 = time.perf_counter_ns()
        for _ in range(n):
            step()
        timing.synchronize(dev)
        bare.append((time.perf_counter_ns() - t0) / n / 1e3)
    ours = timing.autorange(step, dev, 1.0, float(warm.samples_ms[-1]))
    ours_us = timing.stats(ours.samples_ms).median * 1e3
    bare_us = statistics.median(bare)
    return {"bare_loop_us": bare_us, "measure_us": ours_us, "overhead_us": ours_us - bare_us}


def pytest_median_ms(config: Config) -> float:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "b.json"
        cmd = [sys.executable, "-m", "pytest", "benchmarks", "-q", "-p", "no:cacheprovider",
               "--rb-device", config.device, "--rb-models", config.model, "--rb-batch-sizes",
               str(config.batch_size), "--rb-modes", config.mode, "--rb-settings", config.setting,
               f"--benchmark-json={out}"]  # fmt: skip
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
        return json.loads(out.read_text())["benchmarks"][0]["stats"]["median"] * 1e3


def spread(values: list[float]) -> float | None:
    """(max - min) / median: None for fewer than two values."""
    if len(values) < 2:
        return None
    return (max(values) - min(values)) / statistics.median(values)


def process_spreads(procs: list[dict], pairs: list[dict]) -> dict:
    """Each kind of fresh process's numbers (one per process: the median of its rounds in the
    in-process children) and their spread between processes, and the spread of measure()'s rounds
    inside one process (the median over processes), to set it against."""
    per_process = {
        "measure": [statistics.median(p["measure_ms"]) for p in procs],
        "timer": [statistics.median(p["timer_ms"]) for p in procs],
        "bare_loop": [statistics.median(p["bare_ms"]) for p in procs],
        "sweep": [p["sweep_ms"] for p in pairs],
        "plain_loop": [p["plain_ms"] for p in pairs],
        "plain_loop_system_malloc": [p["plain_system_malloc_ms"] for p in pairs],
    }
    within = [s for s in (spread(p["measure_ms"]) for p in procs) if s is not None]
    return {
        "between_processes": {
            kind: {"ms": values, "spread": spread(values)} for kind, values in per_process.items()
        },
        "measure_within_one_process": statistics.median(within) if within else None,
    }


def spread_line(spreads: dict) -> str:
    """The between-process spreads in one line, with the spread inside one process."""

    def said(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f}%"

    parts = []
    for kind, got in spreads["between_processes"].items():
        if got["ms"]:
            span = f"{min(got['ms']):.2f}..{max(got['ms']):.2f} ms"
            parts.append(f"{kind.replace('_', ' ')} {span} ({said(got['spread'])})")
    return (f"between processes (max - min) / median: {'; '.join(parts)}; inside one process, "
            f"measure()'s rounds: {said(spreads['measure_within_one_process'])}")  # fmt: skip


def _within(ratios: list[float], tolerance: float = TOLERANCE) -> bool:
    return all(abs(r - 1) <= tolerance for r in ratios)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="(default: cuda where there is one, else cpu)",
    )
    p.add_argument(
        "--processes", type=int, default=4, help="fresh processes per check (default: 4)"
    )
    p.add_argument("--rounds", type=int, default=3, help="rounds per in-process check (default: 3)")
    p.add_argument("--budget", type=float, default=1.0, help="seconds per measurement (default: 1)")
    p.add_argument("--model", default="resnet18", help="(default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=8, help="(default: %(default)s)")
    p.add_argument(
        "--setting", default="fp32", help="as in the tables, e.g. tf32+cl (default: fp32)"
    )
    p.add_argument(
        "--pytest-benchmark", action="store_true", help="also compare `pytest benchmarks`"
    )
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    p.add_argument("--child", choices=["inprocess", "plain"], help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    (setting,) = parse_settings(args.setting, "--setting")
    config = Config(args.model, args.batch_size, device=args.device, **setting)
    if args.child == "inprocess":
        print(json.dumps(in_process(config, args.rounds, args.budget)))
        return 0
    if args.child == "plain":
        print(json.dumps(plain_process(config, max(PLAIN_ITERS_MIN_S, args.budget))))
        return 0
    procs = []
    for i in range(args.processes):
        procs.append(child("inprocess", config, args))
        p = procs[-1]
        print(f"process {i + 1}: measure/Timer {p['ratio_measure_over_timer']:.3f}, measure/bare "
              f"loop {p['ratio_measure_over_bare']:.3f} (user loop {statistics.median(p['timer_ms']):.2f} "
              f"ms, {p['user_loop_faults_per_iter']:.0f} page faults/iteration)", flush=True)  # fmt: skip
    pairs = between_processes(config, args)
    timer_ratios = [p["ratio_measure_over_timer"] for p in procs]
    bare_ratios = [p["ratio_measure_over_bare"] for p in procs]
    sweep_ratios = [p["ratio_sweep_over_plain"] for p in pairs]
    system_ratios = [p["ratio_sweep_over_plain_system_malloc"] for p in pairs]
    result = {
        "device": args.device,
        "config": f"{config.model} b{config.batch_size} {config.setting} {config.mode}",
        "command": "python scripts/clock_check.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "tolerance": TOLERANCE,
        "in_process": procs,
        "between_processes": pairs,
        "summary": {
            "measure_over_timer": timer_ratios,
            "measure_over_bare_loop": bare_ratios,
            "sweep_over_plain_loop": sweep_ratios,
            "sweep_over_plain_loop_system_malloc": system_ratios,
            "every_process_within_tolerance": _within(timer_ratios + bare_ratios + sweep_ratios),
        },
        "spread": process_spreads(procs, pairs),
        "harness": tiny_overhead(args.device),
        "env": {k: collect_env()[k] for k in ("torch", "cpu", "gpu_names", "torch_threads")},
    }
    if args.pytest_benchmark:
        bench, ours = [], []
        for _ in range(args.rounds):
            ours.append(measure(config, args.budget, peak=False).latency_ms_median)
            bench.append(pytest_median_ms(config))
        result["pytest_benchmark_ms"], result["measure_ms"] = bench, ours
        result["ratio_pytest_over_measure"] = statistics.median(bench) / statistics.median(ours)
    span = lambda xs: f"{min(xs):.3f}..{max(xs):.3f}"  # noqa: E731
    print(
        f"measure / Timer, per process: {span(timer_ratios)}; measure / bare loop: "
        f"{span(bare_ratios)}; sweep / plain loop: {span(sweep_ratios)} (target 0.95..1.05)"
    )
    print(f"sweep / plain loop under glibc's default malloc: {span(system_ratios)} "
          "(the allocator's effect on a plain process, not the clock's)")  # fmt: skip
    print(spread_line(result["spread"]))
    if args.pytest_benchmark:
        print(
            f"pytest-benchmark / measure: {result['ratio_pytest_over_measure']:.3f} (target 0.90..1.10)"
        )
    h = result["harness"]
    print(f"harness: bare loop {h['bare_loop_us']:.2f} us, measure {h['measure_us']:.2f} us, "
          f"overhead {h['overhead_us']:+.2f} us per iteration")  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    ok = result["summary"]["every_process_within_tolerance"]
    if args.pytest_benchmark:
        ok = ok and abs(result["ratio_pytest_over_measure"] - 1) <= 2 * TOLERANCE
    print("every target met" if ok else "a target was missed (see above)")
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    raise SystemExit(main())
