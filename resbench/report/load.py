"""How busy the machine was with other processes while a run measured, and what that does to its
answers: the load rule over a run (``run_load``), its warning with the size of the effect and what
to do (``load_warning``), and an answer withheld where its rows ran under load (``load_note``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from resbench.engine.measure import Result
from resbench.engine.timing import LOAD_ANY_CORES, LOAD_MEDIAN_CORES
from resbench.report.analysis import BASELINE_SETTING, ROW_KEY, finite, row_loaded


@dataclass(frozen=True)
class Load:
    """How busy the machine was with other processes across a run's measured Results."""

    rows: int  # Results with a recorded foreign_cpu
    loaded: int  # of those, measured with at least LOAD_MEDIAN_CORES busy elsewhere
    median_cores: float
    max_cores: float

    @property
    def busy(self) -> bool:
        return self.rows > 0 and (
            self.median_cores >= LOAD_MEDIAN_CORES or self.max_cores >= LOAD_ANY_CORES
        )


def run_load(results: Sequence[Result]) -> Load:
    cores = [
        c for c in (finite(r.foreign_cpu) for r in results if r.status == "ok") if c is not None
    ]
    if not cores:
        return Load(0, 0, 0.0, 0.0)
    return Load(
        len(cores),
        sum(c >= LOAD_MEDIAN_CORES for c in cores),
        float(np.median(cores)),
        float(max(cores)),
    )


def load_warning(results: Sequence[Result], cores: int | None = None) -> str | None:
    """One sentence when the Results were measured under load (the load rule above), else None:
    how much, what it does to a row whose threads outnumber the cores left free (``cores``: the
    host's, where known), and what to do."""
    load = run_load(results)
    if not load.busy:
        return None
    text = (
        f"measured under load: {load.loaded} of {load.rows} results ran while other processes "
        f"kept {LOAD_MEDIAN_CORES:g}+ cores busy (median {load.median_cores:.2f}, "
        f"max {load.max_cores:.2f} cores" + (f" of {cores})" if cores else ")")
    )
    starved = [
        r for r in results
        if r.status == "ok" and row_loaded(r.foreign_cpu) and cores and r.threads
        and r.threads * (r.streams or 1) > cores - r.foreign_cpu
    ]  # fmt: skip
    if starved:
        text += (
            f"; {len(starved)} of them ran more intra-op threads than the cores left free, so "
            "every parallel step waited on a thread with no core: such a row reads many times "
            "slower, not 10-20% (resnet18 b1 fp32, 2 threads with 1 of 2 cores taken: 24.8 ms "
            "quiet, 914 ms loaded, 37x, on a 2-vCPU Xeon), and a speed-up between two such rows "
            "measures the load"
        )
    else:
        text += "; their numbers are slower and noisier by as much as the load took"
    free = f" or with --threads {max(1, int(cores - load.max_cores))}" if cores else ""
    return text + (
        ". Answers that rest on a loaded row are withheld. Rerun on a quiet machine (the "
        f"sweep's --wait-quiet SECONDS waits for one){free}, so the threads fit the free cores"
    )


def load_note(part: pd.DataFrame, row) -> str:
    """ "no answer: measured under load (...)" where ``row`` (an answer) or the fp32 eager row it
    is measured against ran under load, else ""."""
    same = np.ones(len(part), dtype=bool)
    for k in ROW_KEY:
        if k in part:
            column = part[k]
            same &= ((column == row[k]) | (column.isna() & pd.isna(row[k]))).to_numpy()
    base = part[same & (part["setting"] == BASELINE_SETTING).to_numpy()]
    rows = [row, *(r for _, r in base.iterrows() if r["setting"] != row["setting"])]
    loaded = [
        f"{r['setting']} {finite(r['foreign_cpu']):.2f} cores busy elsewhere"
        for r in rows
        if row_loaded(r.get("foreign_cpu"))
    ]
    return f"no answer: measured under load ({'; '.join(loaded)})" if loaded else ""
