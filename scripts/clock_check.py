"""Is resbench's clock right? measure() against torch.utils.benchmark and a bare loop, in one process.

    python scripts/clock_check.py --device cpu [--pytest-benchmark] [--out clock.json]

1. One inference Config (default resnet18, batch 8, fp32; on a GPU pick one that is not
   launch-bound, e.g. ``--model resnet50 --batch-size 128 --setting tf32``): ``measure()`` and
   ``Timer.blocked_autorange`` interleaved (A B A B A B), ratio of medians. Target: within 5%.
2. Harness overhead: a 1x1 convolution on a tiny input, ``measure()``'s median against a bare
   ``perf_counter_ns`` loop around the same prepared step. Target: a few microseconds.
3. With --pytest-benchmark: the same Config through ``pytest benchmarks`` (a subprocess),
   interleaved with ``measure()``. Target: within 10%.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.benchmark import Timer

from resbench import timing
from resbench.cli import parse_settings
from resbench.env import collect_env
from resbench.measure import Config, measure, prepare

ROOT = Path(__file__).resolve().parent.parent


def timer_median_ms(config: Config, min_run_time: float) -> float:
    with prepare(config) as p:
        timing.warmup(p.step, torch.device(config.device), max_s=2.0)
        # Timer runs single-threaded unless told otherwise; measure() uses the process's threads
        timer = Timer(stmt="step()", globals={"step": p.step}, num_threads=torch.get_num_threads())
        m = timer.blocked_autorange(min_run_time=min_run_time)
    return m.median * 1e3


def tiny_overhead(device: str) -> dict:
    """measure() on a near-empty model vs a bare perf_counter loop around the same call."""
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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--budget", type=float, default=2.0, help="seconds per measurement")
    p.add_argument("--model", default="resnet18")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument(
        "--setting", default="fp32", help="as in the tables, e.g. tf32+cl (default: %(default)s)"
    )
    p.add_argument("--pytest-benchmark", action="store_true")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    (setting,) = parse_settings(args.setting, "--setting")
    config = Config(args.model, args.batch_size, device=args.device, **setting)
    ours, theirs, bench = [], [], []
    for i in range(args.rounds):
        ours.append(measure(config, args.budget, peak=False).latency_ms_median)
        theirs.append(timer_median_ms(config, args.budget))
        if args.pytest_benchmark:
            bench.append(pytest_median_ms(config))
        line = f"round {i + 1}: measure {ours[-1]:.3f} ms, Timer {theirs[-1]:.3f} ms"
        print(line + (f", pytest-benchmark {bench[-1]:.3f} ms" if bench else ""), flush=True)
    result = {
        "device": args.device,
        "config": f"{config.model} b{config.batch_size} {config.setting} {config.mode}",
        "measure_ms": ours,
        "timer_ms": theirs,
        "ratio_measure_over_timer": statistics.median(ours) / statistics.median(theirs),
        "harness": tiny_overhead(args.device),
        "env": {k: collect_env()[k] for k in ("torch", "cpu", "gpu_names", "torch_threads")},
    }
    if bench:
        result["pytest_benchmark_ms"] = bench
        result["ratio_pytest_over_measure"] = statistics.median(bench) / statistics.median(ours)
    print(f"measure / Timer: {result['ratio_measure_over_timer']:.3f} (target 0.95..1.05)")
    if bench:
        print(
            f"pytest-benchmark / measure: {result['ratio_pytest_over_measure']:.3f} (target 0.90..1.10)"
        )
    h = result["harness"]
    print(f"harness: bare loop {h['bare_loop_us']:.2f} us, measure {h['measure_us']:.2f} us, "
          f"overhead {h['overhead_us']:+.2f} us per iteration")  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
