"""The answer for a user who stays in PyTorch: beside the fastest setting of all, the fastest that
PyTorch runs on its own (eager, compile, aotinductor, CUDA graphs: ``settings.Backend.pytorch``), with
its accuracy price where the rows were scored on labelled images."""

from __future__ import annotations

import pandas as pd

from resbench import settings
from resbench.report import accuracy
from resbench.report.analysis import answers, by_input
from resbench.report.text import flags, fmt, times

PYTORCH_COLUMN = "fastest in PyTorch"


def _in_pytorch(backend) -> bool:
    entry = settings.BACKENDS.get(backend)
    return entry is not None and entry.pytorch


def with_pytorch(
    part: pd.DataFrame, rows: pd.DataFrame, max_drop: float, scored: bool
) -> pd.DataFrame:
    """``rows`` with a column naming the fastest setting that stays in PyTorch, per model and
    batch ("the same" where the fastest overall is one), with its accuracy price where scored;
    ``rows`` as they are when every row measured is PyTorch's own."""
    native = part["backend"].map(_in_pytorch).astype(bool) if "backend" in part else None
    if rows.empty or native is None or native.all() or not native.any():
        return rows
    overall = {(r["model"], r["batch_size"]): r for _, r in answers(by_input(part)).iterrows()}
    said = {}
    for _, r in answers(by_input(part[native])).iterrows():
        key = (r["model"], r["batch_size"])
        if key in overall and overall[key]["setting"] == r["setting"]:
            said[key] = "the same"
        elif scored:
            said[key] = accuracy.overall_text(r, max_drop)
        else:
            said[key] = f"{r['setting']}{flags(r)}: {fmt(r['throughput_ips'])} img/s" + (
                f", {times(r['speedup'])}" if pd.notna(r.get("speedup")) else ""
            )
    column = [said.get((m, b), "") for m, b in zip(rows["model"], rows["batch"], strict=True)]
    at = list(rows.columns).index("fastest overall") + 1 if scored else len(rows.columns)
    rows = rows.copy()
    rows.insert(at, PYTORCH_COLUMN, column)
    return rows
