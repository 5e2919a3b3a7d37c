"""Recompute the stage table of a saved CUDA profile from its trace.json.gz, with today's stage code.

    python scripts/stages_from_trace.py results/gpu-h100-cuda/profile/trace.json.gz --model resnet50

The Chrome trace that ``python -m resbench.profile`` writes holds every CPU operator (with its
autograd sequence number), every record_function range, every kernel (linked to the operator that
launched it by its "External id") and each range's GPU-side annotation span. This script rebuilds the
event tree that torch.profiler hands to ``resbench.profile`` (the attributes of FunctionEvent it
reads, with the annotation spans among a range's kernels as torch puts them, pytorch#130730) and runs
``profile.median_step`` and ``profile.stages_frame`` on it, so a profile taken on a GPU can be
re-read after the stage code changes, without the GPU. Prints the table; --out writes markdown.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace

import torch

from resbench import profile
from resbench.models import build_model

CPU_CATEGORIES = {"cpu_op", "user_annotation"}


class TraceEvent:
    """One CPU-side event with the FunctionEvent attributes the stage split reads (times in us)."""

    def __init__(self, raw: dict) -> None:
        self.name = raw["name"]
        start, dur = float(raw["ts"]), float(raw.get("dur", 0.0))
        self.time_range = SimpleNamespace(start=start, end=start + dur)
        self.cpu_time_total = dur
        args = raw.get("args", {})
        self.sequence_nr = int(args.get("Sequence number", -1))
        self.external_id = args.get("External id")
        self.thread = (raw["pid"], raw["tid"])
        self.kernels: list[SimpleNamespace] = []
        self.cpu_parent: TraceEvent | None = None
        self.cpu_children: list[TraceEvent] = []


def events_from_trace(path: Path) -> list[TraceEvent]:
    raw = [e for e in profile.trace_events(path) if e.get("ph") == "X"]
    cpu = [TraceEvent(e) for e in raw if e.get("cat") in CPU_CATEGORIES]
    by_id = {e.external_id: e for e in cpu if e.external_id is not None}
    for (
        e
    ) in raw:  # kernels and GPU annotation spans join the CPU event that launched or opened them
        if e.get("cat") in ("kernel", "gpu_memset", "gpu_memcpy", "gpu_user_annotation"):
            owner = by_id.get(e.get("args", {}).get("External id"))
            if owner is not None:
                owner.kernels.append(SimpleNamespace(name=e["name"], duration=float(e["dur"])))
    threads: dict[tuple, list[TraceEvent]] = {}
    for e in cpu:
        threads.setdefault(e.thread, []).append(e)
    for events in threads.values():  # nesting by containment, per thread
        stack: list[TraceEvent] = []
        for e in sorted(events, key=lambda e: (e.time_range.start, -e.cpu_time_total)):
            while stack and e.time_range.start >= stack[-1].time_range.end:
                stack.pop()
            if stack:
                e.cpu_parent = stack[-1]
                stack[-1].cpu_children.append(e)
            stack.append(e)
    return cpu


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("trace", type=Path)
    p.add_argument("--model", required=True, help="the profiled model, for its stage names")
    p.add_argument("--out", type=Path, help="write the table here as markdown")
    args = p.parse_args()
    events = events_from_trace(args.trace)
    prof = SimpleNamespace(events=lambda: events)
    step = profile.median_step(prof)
    with torch.device("meta"):  # only the stage names are needed
        model = build_model(args.model)
    stages = profile.stages_frame(prof, True, model, step)
    step_ms = step.cpu_time_total / 1e3
    kernel_ms = profile.kernel_time_us(prof, step) / 1e3
    text = [
        f"# Step time by stage, recomputed from {args.trace}",
        "",
        f"`python scripts/stages_from_trace.py {args.trace} --model {args.model}`. Median profiled "
        f"step ({step.name}): {step_ms:.3f} ms of wall time; the kernels launched in it ran "
        f"{kernel_ms:.3f} ms. A stage's time is the kernel time inside its ranges: forward by "
        "record_function range, backward by autograd sequence number.",
        "",
        profile.stages_markdown(stages, kernel_ms, "kernel time"),
    ]
    print("\n".join(text))
    if args.out:
        args.out.write_text("\n".join(text))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
