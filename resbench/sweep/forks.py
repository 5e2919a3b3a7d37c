"""``--forks N``: N passes over the grid, each in a fresh worker process, and their cumulative Results.

One process's samples share its memory layout, allocator state and placement, so a Config measured
in one process says nothing about how much the next process would differ; on a 2-core CPU that
difference is the largest one (1.1-1.7x between fresh sweeps for Configs of a few ms). A sweep with
``--forks N`` runs the whole grid N times, pass k in a fresh ``isolate.Worker`` and starting k/N of
the way through the grid (the order rotated), so that a minute's drift and each process's luck
spread over the Configs evenly instead of landing on the same ones every pass.

``results.jsonl`` keeps one *cumulative* Result per Config per pass: after fork k the row appended
combines forks 0..k (the engine's ``pooling.combine``), so ``runfolder.latest`` gives every reader
the most complete Result of each Config, and a run killed in pass k resumes inside it: a Config with
k ok forks gets fork k next (``fork_state``). Only fork 0 scores accuracy and agreement (``measure(score=False)``
in the later ones). A fork that fails (error, oom, skipped) writes its row, its error prefixed
"fork k of N: " (k counted from 1); an oom or skipped Config is not measured in later passes, and an
errored one is measured again by ``--resume``, combined with its last ok row.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from resbench import settings
from resbench.engine import pooling
from resbench.engine.devices import default_threads
from resbench.engine.measure import Config, Result, utc_now
from resbench.runfolder import ResultLog, latest
from resbench.sweep.eta import Progress

# the statuses after which a Config gets no more forks (an error is measured again by --resume)
FINAL = ("oom", "skipped")

# measure_fork(config, worker or None, score=...) -> the fork's own Result
MeasureFork = Callable[..., Result]


def forks_of(result: Result) -> int:
    """How many processes an ok Result combines (a row from before --forks: one)."""
    return result.forks or 1


def rotated(configs: Sequence[Config], k: int, n: int) -> list[Config]:
    """Pass k of n: the grid's order, starting k/n of the way through it."""
    start = k * len(configs) // n if n else 0
    return list(configs[start:]) + list(configs[:start])


@dataclass
class _State:
    """Where one Config stands: its last ok Result, and whether it gets more forks."""

    ok: Result | None = None
    stopped: bool = False  # oom/skipped, an error kept (--keep-errors), or an error this run

    @property
    def done(self) -> int:
        return forks_of(self.ok) if self.ok is not None else 0


def fork_state(rows: Sequence[Result], keep_errors: bool = False) -> dict[tuple, _State]:
    """Each Config's state from every row of a run folder, in file order: its last ok row gives
    the forks done; a latest row that is oom or skipped (or an error, with ``keep_errors``) ends
    it, and an errored fork is measured again, combined with the last ok row."""
    state: dict[tuple, _State] = {}
    for r in rows:
        s = state.setdefault(r.key(), _State())
        if r.status == "ok":
            s.ok = r
        s.stopped = r.status in FINAL or (keep_errors and r.status == "error")
    return state


def forks_left(state: dict[tuple, _State], config: Config, forks: int) -> int:
    """How many of its ``forks`` a Config still needs (0 once it is stopped)."""
    s = state.get(config.key(), _State())
    return 0 if s.stopped else max(0, forks - s.done)


def _series(config: Config) -> tuple:
    """Configs that differ only in batch size: an OOM at one batch skips the larger ones."""
    return (config.device, config.model, config.image_size, config.mode, config.setting,
            config.scenario, config.streams, config.threads, config.rate, config.max_queue_ms,
            config.target_p99_ms)  # fmt: skip


def scenario_part(r: Config) -> str:
    """How a row issued its calls, for a progress line: "" for single-stream on the default
    threads, else "offline 2x1" (streams x threads), "server 2x1 @200/s", "server 1x2 p99<=100ms"."""
    if r.scenario == settings.DEFAULT_SCENARIO:
        return "" if r.threads == default_threads() else f" {r.threads} threads"
    knob = ""
    if r.scenario == "server":
        knob = f" @{r.rate:g}/s" if r.target_p99_ms is None else f" p99<={r.target_p99_ms:g}ms"
    return f" {r.scenario} {r.streams}x{r.threads}{knob}"


def summary_line(r: Result) -> str:
    head = f"{r.model:<16} b={r.batch_size:<4} {r.device:<6} {r.mode:<9} {r.setting:<22}"
    head += scenario_part(r)
    if r.status != "ok":
        return f"{head} {r.status}: {(r.error or '')[:80]}"
    mem = f"{r.peak_memory_mb:8.0f} MB" if r.peak_memory_mb is not None else "       - MB"
    noisy = " (noisy)" if r.noisy else ""
    forks = f" {r.forks} forks {r.fork_spread or 0:.0%} apart" if (r.forks or 1) > 1 else ""
    if r.scenario == "server" and not r.sustained:
        if r.target_p99_ms is not None:
            return f"{head} no rate met p99 <= {r.target_p99_ms:g} ms ({len(r.peak_tries)} tried)"
        achieved = f"{r.achieved_rate:.1f}/s" if r.achieved_rate is not None else "-"
        return f"{head} not sustained: {achieved} of {r.rate:g}/s served"
    if r.scenario == "server":
        return (f"{head} {r.throughput_ips:10.1f} img/s  p99 {r.latency_ms_p99:9.3f} ms {mem}  "
                f"ok{noisy}{forks}")  # fmt: skip
    return (f"{head} {r.throughput_ips:10.1f} img/s {r.latency_ms_median:9.3f} ms {mem}  "
            f"ok{noisy}{forks}")  # fmt: skip


@dataclass
class Passes:
    """What run_passes did: the rows it appended (cumulative), the seconds its forks spent warming
    up and measuring, and how many Configs a deadline left without all their forks."""

    rows: list[Result] = field(default_factory=list)
    measured_s: float = 0.0
    left: int = 0


def run_passes(
    configs: Sequence[Config],
    log: ResultLog,
    rows: Sequence[Result],
    forks: int,
    measure_fork: MeasureFork,
    new_worker: Callable[[], AbstractContextManager],
    deadline: float | None = None,
    progress: bool = True,
    keep_errors: bool = False,
    estimate_of: Callable[[Config], float] = lambda c: 1.0,
    fixed_of: Callable[[Sequence[Config]], float] = lambda todo: 0.0,
) -> Passes:
    """Measure every fork of every Config not done yet: pass k in the context ``new_worker()``
    gives (a fresh worker, or None to measure in this process), in ``rotated`` order.

    ``rows``: every row the run folder holds, in file order. An OOM marks the larger batch sizes of
    the same setting "skipped". KeyboardInterrupt propagates after the finished rows are on disk.
    The progress bar (``eta.Progress``) counts each fork's estimated seconds (``estimate_of``), plus
    ``fixed_of(the Configs to run)`` for the run's start-up.
    """
    state = fork_state(rows, keep_errors)
    oom_at: dict[tuple, int] = {}
    for r in latest(rows):
        if r.status == "oom":
            oom_at[_series(r)] = min(oom_at.get(_series(r), r.batch_size), r.batch_size)

    def left(c: Config) -> int:
        return forks_left(state, c, forks)

    out = Passes()
    todo_all = [c for c in configs for _ in range(left(c))]  # one entry per fork to measure
    bar = Progress(todo_all, estimate_of, not progress, fixed_of([c for c in configs if left(c)]))
    try:
        for k in range(forks):
            todo = [c for c in rotated(configs, k, forks) if left(c) and forks - left(c) == k]
            if not todo:
                continue
            with new_worker() as worker:  # a fresh process per pass (started on its first Config)
                for config in todo:
                    if deadline is not None and time.monotonic() > deadline:
                        out.left = sum(bool(left(c)) for c in configs)
                        return out
                    bar.started(config, f"fork {k + 1}/{forks} " if forks > 1 else "")
                    row = _fork(config, k, forks, state, oom_at, worker, measure_fork, out)
                    s = state.setdefault(config.key(), _State())
                    if row.status == "ok":
                        s.ok = row
                    else:
                        bar.drop(config, left(config) - 1)  # no more forks of it in this run
                        s.stopped = True
                    log.append(row)
                    out.rows.append(row)
                    bar.finished(config, row)
                    said = f"fork {k + 1}/{forks} " if forks > 1 else ""
                    bar.write(said + summary_line(row))
    finally:
        bar.close()
    return out


def _fork(config, k, forks, state, oom_at, worker, measure_fork, out: Passes) -> Result:
    """Fork k of one Config: its own Result measured (or skipped after an OOM), then the row."""
    limit = oom_at.get(_series(config))
    if limit is not None and config.batch_size > limit:
        result = Result.for_config(config, status="skipped", timestamp=utc_now(),
                                   error=f"batch {limit} already ran out of memory")  # fmt: skip
    else:
        result = measure_fork(config, worker, score=k == 0)
        out.measured_s += (result.warmup_s or 0.0) + (result.measure_s or 0.0)
    if result.status == "oom":
        oom_at[_series(config)] = min(oom_at.get(_series(config), config.batch_size),
                                      config.batch_size)  # fmt: skip
    if result.status == "ok":
        return pooling.combine(state[config.key()].ok if config.key() in state else None, result)
    if forks > 1:
        result = dataclasses.replace(result, error=f"fork {k + 1} of {forks}: {result.error or ''}")
    return result
