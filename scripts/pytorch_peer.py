"""Does resbench report what PyTorch itself does? Its native rows against a plain script's.

    python scripts/pytorch_peer.py --model resnet18 --batch-size 8 [--rounds 3] [--out peer.json]

For each native setting (default: fp32+cl eager, fp32+cl+compile and bf16+cl+compile with
Inductor's freezing, int8+cl+compile through PT2E), this writes the plain script a PyTorch CPU
inference engineer would write: the model built and placed by hand, ``torch.compile`` with
``torch._inductor.config.freezing = True``, PT2E int8 with torchao's X86InductorQuantizer calibrated
on generated images, timed by ``torch.utils.benchmark.Timer.blocked_autorange``. It runs each in a
fresh process, alternating with a fresh ``python -m resbench.sweep`` of the same Config (one fork),
which of the two goes first turning each round. The ratio is resbench's images/s over the script's,
per round; the target is every setting's median ratio within ``--tolerance`` (10%) of 1. With
--strict a miss exits 1. The JSON names the machine (CPU, flags) and keeps every round's figures.

The plain script runs under resbench's allocator policy (glibc's trim and mmap thresholds fixed,
``GLIBC_TUNABLES``), the like-for-like comparison; the first round also runs it under glibc's
default, to show what the allocator alone costs a plain process here (``docs/measurement/clock.md``).
Its Timer is given the process's thread count: ``torch.utils.benchmark.Timer`` runs a statement on
one thread unless told, which read resnet18 b8 at half resbench's rate on a 2-core EPYC.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from resbench import cli, env
from resbench.datamodel import Config
from resbench.engine.devices import STEADY_THRESHOLD_BYTES
from resbench.runfolder import read_results

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SETTINGS = "fp32+cl,fp32+cl+compile,bf16+cl+compile,int8+cl+compile"
TOLERANCE = 0.10
# what resbench's steady_allocator() does, as the environment of a process it does not run
STEADY_TUNABLES = ":".join(
    f"glibc.malloc.{name}={STEADY_THRESHOLD_BYTES}" for name in ("mmap_threshold", "trim_threshold")
)

# The user's script: nothing of resbench but the architecture (their own model). Its arguments:
# model, batch size, image size, precision, channels_last (0/1), compile (0/1), seconds to time.
PLAIN = r"""
import json, sys
import torch
from torch.utils.benchmark import Timer
from resbench.models import build_model

name, batch, size, precision, cl, compiled, seconds = sys.argv[1:8]
batch, size, seconds = int(batch), int(size), float(seconds)
fmt = torch.channels_last if cl == "1" else torch.contiguous_format
torch.manual_seed(0)
model = build_model(name).eval().to(memory_format=fmt)
x = torch.randn(batch, 3, size, size).contiguous(memory_format=fmt)
if precision == "int8":
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86
    with torch.no_grad():
        graph = torch.export.export(model, (x,), strict=True).module()
        quantizer = x86.X86InductorQuantizer()
        quantizer.set_global(x86.get_default_x86_inductor_quantization_config())
        prepared = prepare_pt2e(graph, quantizer)
        gen = torch.Generator().manual_seed(1234)
        for _ in range(max(1, -(-32 // batch))):
            prepared(torch.randn(batch, 3, size, size, generator=gen).contiguous(memory_format=fmt))
        model = convert_pt2e(prepared)
if compiled == "1":
    torch._inductor.config.freezing = True
    model = torch.compile(model)
dtype = torch.bfloat16 if precision == "bf16" else None

def step():
    with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
        return model(x)

for _ in range(3):  # the compilation, then warm calls
    step()
# Timer runs its statement on ONE thread unless told (num_threads=1 by default): the process's own
m = Timer("step()", globals={"step": step}, num_threads=torch.get_num_threads())
m = m.blocked_autorange(min_run_time=seconds)
print(json.dumps({"median_ms": m.median * 1e3, "ips": batch / m.median, "runs": len(m.times)}))
"""


def plain(config: Config, seconds: float, steady: bool = True) -> dict:
    """The user's script for ``config``, in a fresh process: its images/s; ``steady``: under
    resbench's allocator policy, else glibc's default."""
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(PLAIN)
    try:
        args = [config.model, config.batch_size, config.image_size, config.precision,
                int(config.channels_last), int(config.backend == "compile"), seconds]  # fmt: skip
        environ = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
        if steady:
            environ["GLIBC_TUNABLES"] = STEADY_TUNABLES
        done = subprocess.run([sys.executable, f.name, *map(str, args)], cwd=ROOT, env=environ,
                              capture_output=True, text=True, check=False)  # fmt: skip
    finally:
        os.unlink(f.name)
    if done.returncode != 0:
        raise RuntimeError(f"the plain script failed for {config.setting}: {done.stderr[-1500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def resbench_row(config: Config, seconds: float) -> dict:
    """``python -m resbench.sweep`` for ``config`` alone, one fork, in a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "resbench.sweep", "--device", "cpu", "--models", config.model,
               "--batch-sizes", str(config.batch_size), "--settings", config.setting, "--forks",
               "1", "--repeats", "1", "--budget", str(seconds), "--no-progress", "--out", str(out)]  # fmt: skip
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
        rows = read_results(out) if out.exists() else []
    if not rows or rows[0].status != "ok":
        why = rows[0].error if rows else done.stderr[-1500:]
        raise RuntimeError(f"resbench's {config.setting} row did not measure: {why}")
    r = rows[0]
    return {"median_ms": r.latency_ms_median, "ips": r.throughput_ips,
            "effective_precision": r.effective_precision, "inductor_options": r.inductor_options}  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--settings", default=DEFAULT_SETTINGS, help=f"default: {DEFAULT_SETTINGS}")
    # three: the median of the ratios then shrugs off one slow fresh process (2 would average it)
    p.add_argument("--rounds", type=int, default=3, help="fresh process pairs per setting")
    p.add_argument("--seconds", type=float, default=2.0, help="time each process measures")
    p.add_argument("--tolerance", type=float, default=TOLERANCE)
    p.add_argument("--strict", action="store_true", help="exit 1 when a ratio misses")
    p.add_argument("--out", type=Path, help="write the JSON here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.rounds < 1 or args.seconds <= 0 or not 0 < args.tolerance < 1:
            raise cli.UsageError(
                "--rounds must be 1 or more, --seconds above 0, --tolerance in (0, 1)"
            )
        cli.parse_models(args.model)
        fields = cli.parse_settings(args.settings, "--settings")
        configs = [Config(args.model, args.batch_size, device="cpu", **f) for f in fields]
        foreign = [c.setting for c in configs if c.backend not in ("eager", "compile")]
        if foreign:
            raise cli.UsageError(
                f"--settings: the plain script runs eager and compile; got {foreign}"
            )
    except (cli.UsageError, ValueError) as exc:
        print(f"pytorch_peer: error: {exc}", file=sys.stderr)
        return 2
    report = {"model": args.model, "batch_size": args.batch_size, "seconds": args.seconds,
              "tolerance": args.tolerance, "plain_allocator": f"GLIBC_TUNABLES={STEADY_TUNABLES}",
              "settings": {}}  # fmt: skip
    e = env.collect_env()
    report["machine"] = {k: e.get(k) for k in ("cpu", "cpu_flags", "onednn_bf16_kernel",
                                               "logical_cores", "torch", "hostname")}  # fmt: skip
    missed = []
    for config in configs:
        rounds = []
        for k in range(args.rounds):
            first_plain = k % 2 == 0
            order = [plain, resbench_row] if first_plain else [resbench_row, plain]
            got = {fn.__name__: fn(config, args.seconds) for fn in order}
            if k == 0:  # what the allocator alone costs a plain process (not in the ratio)
                got["plain_system_malloc"] = plain(config, args.seconds, steady=False)
            ratio = got["resbench_row"]["ips"] / got["plain"]["ips"]
            rounds.append({"first": "plain" if first_plain else "resbench", **got, "ratio": ratio})
            print(f"{config.setting:18s} round {k + 1}: resbench {got['resbench_row']['ips']:9.1f} "
                  f"img/s, plain {got['plain']['ips']:9.1f} img/s, ratio {ratio:.3f}", flush=True)  # fmt: skip
        median = statistics.median(r["ratio"] for r in rounds)
        within = abs(median - 1) <= args.tolerance
        if not within:
            missed.append(config.setting)
        report["settings"][config.setting] = {"rounds": rounds, "median_ratio": median,
                                              "within": within}  # fmt: skip
    report["missed"] = missed
    verdict = "every setting within" if not missed else f"missed: {', '.join(missed)}; target"
    print(f"pytorch_peer: {verdict} {args.tolerance:.0%} of the plain script")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if missed and args.strict else 0


if __name__ == "__main__":
    raise SystemExit(main())
