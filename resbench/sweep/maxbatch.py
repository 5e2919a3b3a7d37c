"""The largest batch that fits: doubling, then bisecting, each probe a logged Result.

Used by ``sweep --find-max-batch`` on CUDA and MPS, where running out of memory is an error the
process survives (CPU memory is overcommitted: the kernel kills the process instead).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence

from resbench.cli import MAX_BATCH
from resbench.engine.measure import Config, Result
from resbench.runfolder import ResultLog


def _series(config: Config) -> tuple:
    """Configs that differ only in batch size."""
    return (config.device, config.model, config.image_size, config.mode, config.setting)


def find_max_batch(
    config: Config, run: Callable[[Config], Result], cap: int = MAX_BATCH, tolerance: float = 1 / 16
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
    show: Callable[[Result], None] = lambda result: None,
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
        show(result)
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
