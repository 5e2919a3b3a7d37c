"""Re-read the kernels of a committed run's PyTorch CPU rows off one call of each row itself.

    python scripts/reread_kernels.py results/quick-cpu [RUN ...] --max-isa AVX512_CORE_BF16

Rows written before resbench read each row's own call named the kernel of one small probe
convolution (``compute_kernel``), which a row may never have run (resnet18 b1 fp32 NCHW runs
jit:avx512_core and jit_1x1, not the probe's brg_conv_fwd; small_resnet20 b1 runs no oneDNN
convolution at all). For each ok PyTorch CPU row without ``kernels``, this prepares its Config
(with the row's --weights where it names one), makes one call under oneDNN's verbose log, and
writes the row's ``compute_kernel``, ``kernels`` and ``reorders`` into its line of results.jsonl,
every other field as it was, with ``kernels_read`` saying where and how they were read. Nothing is
timed. ``--max-isa`` caps oneDNN at the instruction set of the host the run was measured on
(ONEDNN_MAX_CPU_ISA, read by oneDNN when it starts, so the script re-executes itself with it set):
oneDNN picks its kernels by instruction set and shape, so a newer host reads the older host's
kernels. Then ``python -m resbench.report RUN`` renders them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ISA_ENV = "ONEDNN_MAX_CPU_ISA"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="run folders (results.jsonl)")
    p.add_argument("--max-isa", help=f"oneDNN's {ISA_ENV} for the run's host, e.g. "
                   "AVX512_CORE_BF16 (EPYC with AVX512-BF16), AVX512_CORE, AVX2")  # fmt: skip
    return p


def wanted(row: dict) -> bool:
    """An ok PyTorch CPU row whose kernels were not read off its own call."""
    from resbench import settings

    backend = settings.BACKENDS.get(row.get("backend") or "eager")
    return (
        row.get("status") == "ok"
        and str(row.get("device", "")).startswith("cpu")
        and backend is not None
        and backend.pytorch
        and row.get("kernels") is None
    )


def reread(row: dict) -> dict:
    """compute_kernel, kernels and reorders of one call of the row's Config."""
    from resbench import env
    from resbench.engine.measure import Result
    from resbench.engine.preparation import prepare

    config = Result.from_dict(row).config()
    with prepare(config, weights=row.get("weights")) as prepared:
        prepared.step()  # the first call compiles or initialises; the second is read
        _, lines = env.onednn_log(prepared.step)
    return env.kernels_of(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    missing = [str(r) for r in args.runs if not (r / "results.jsonl").is_file()]
    if missing:
        print(f"reread_kernels: error: not a run folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    if args.max_isa and os.environ.get(ISA_ENV) != args.max_isa:
        environ = dict(os.environ, **{ISA_ENV: args.max_isa})
        os.execve(sys.executable, [sys.executable, __file__, *sys.argv[1:]], environ)
    from resbench import env

    host = f"{env.cpu_model()}" + (f" with {ISA_ENV}={args.max_isa}" if args.max_isa else "")
    for run in args.runs:
        path = run / "results.jsonl"
        lines = path.read_text().splitlines()
        done = 0
        for i, line in enumerate(lines):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # kept as it is: the readers skip it with a warning
            if not wanted(row):
                continue
            try:
                row |= reread(row)
            except Exception as exc:  # a Config that no longer prepares: said, left as it was
                print(f"reread_kernels: {run.name}: {row['model']} b{row['batch_size']}: "
                      f"{type(exc).__name__}: {exc}", file=sys.stderr)  # fmt: skip
                continue
            row["kernels_read"] = f"re-read later on {host}, from one call of the row's Config"
            lines[i] = json.dumps(row)
            done += 1
            path.write_text("\n".join(lines) + "\n")  # after each row: an interrupt loses none
        print(f"reread_kernels: {run}: {done} rows re-read on {host}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
