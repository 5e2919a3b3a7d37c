"""``--forks N``: N passes over the grid, each in a fresh worker process, and their cumulative Results.

One process's samples share its memory layout, allocator state and placement, so a Config measured
in one process says nothing about how much the next process would differ; on a 2-core CPU that
difference is the largest one (1.1-1.7x between fresh sweeps for Configs of a few ms). A sweep with
``--forks N`` runs the whole grid N times, pass k in a fresh ``isolate.Worker`` and starting k/N of
the way through the grid (the order rotated), so that a minute's drift and each process's luck
spread over the Configs evenly instead of landing on the same ones every pass.

``results.jsonl`` keeps one *cumulative* Result per Config per pass: after fork k the row appended
combines forks 0..k (``combine``), so ``runfolder.latest`` gives every reader the most complete
Result of each Config, and a run killed in pass k resumes inside it: a Config with k ok forks gets
fork k next (``fork_state``). Only fork 0 scores accuracy and agreement (``measure(score=False)``
in the later ones). A fork that fails (error, oom, skipped) writes its row, its error prefixed
"fork k of N: " (k counted from 1); an oom or skipped Config is not measured in later passes, and an
errored one is measured again by ``--resume``, combined with its last ok row.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from resbench import settings
from resbench.datamodel import fork_groups, fork_medians
from resbench.engine import power, probes, serve, timing
from resbench.engine.devices import default_threads
from resbench.engine.measure import Config, Result, utc_now
from resbench.runfolder import ResultLog, latest
from resbench.sweep.eta import Progress

# what only fork 0 measures (measure(score=False) in the others), or what is the Config's first
# preparation in a fresh process (its first call, the backend's preparation, the clocks as it began)
FIRST_FORK_FIELDS = ("max_abs_diff", "top1_agreement", "agreement_inputs", "calibration",
                     "calibration_method", "calibration_images", "top1_accuracy", "top1_ties",
                     "top5_accuracy", "accuracy_drop", "flips_lost", "flips_gained", "accuracy_drop_p", "accuracy_drop_ci",
                     "kl_divergence", "logit_rel_error", "eval_images", "eval_data", "eval_s",
                     "compile_time_s", "prepare_s")  # fmt: skip
# the statuses after which a Config gets no more forks (an error is measured again by --resume)
FINAL = ("oom", "skipped")

# measure_fork(config, worker or None, score=...) -> the fork's own Result
MeasureFork = Callable[..., Result]


def forks_of(result: Result) -> int:
    """How many processes an ok Result combines (a row from before --forks: one)."""
    return result.forks or 1


def _reading(r: Result) -> power.Reading:
    """The energy reading a Result was made from, as far as its fields keep it."""
    wall = r.energy_j / r.avg_power_w if r.energy_j and r.avg_power_w else None
    return power.Reading(
        r.power_method or "none", r.energy_j, wall, r.sm_clock_mhz_start, r.sm_clock_mhz_end,
        r.temperature_c_start, r.temperature_c_end, r.throttled, r.throttle_reasons,
    )  # fmt: skip


def combine(previous_ok: Result | None, new: Result) -> Result:
    """One Result of the forks of ``previous_ok`` (an ok Result of forks 0..k-1, or None) and the ok
    fork ``new``: its median is the median of the fork medians, the percentiles those of every
    fork's samples with each fork weighted equally (``timing.fork_stats``), so they describe what
    the median does; iterations and times add up, peak memory is the largest, energy adds up; what
    only fork 0 measures (accuracy, agreement, the first call) is ``previous_ok``'s."""
    if previous_ok is None:
        median = new.latency_ms_median
        medians = [median] if median is not None else []
        counts = [len(new.samples_ms)] if new.samples_ms else []
        return dataclasses.replace(
            new, forks=1, fork_medians_ms=medians, fork_spread=0.0, fork_samples=counts
        )
    if new.scenario != settings.DEFAULT_SCENARIO:
        return _combine_serving(previous_ok, new)
    first = previous_ok
    medians = [*fork_medians(first), new.latency_ms_median]
    median, spread = statistics.median(medians), timing.spread(medians)
    samples = [*first.samples_ms, *new.samples_ms]
    earlier = fork_groups(first)  # [] where an old row's forks cannot be told apart
    groups = [*earlier, list(new.samples_ms)] if earlier and new.samples_ms else []
    s = timing.fork_stats(groups) if groups else None  # unknown rather than pooled
    achieved = new.gflops_per_step / (median / 1e3) / 1e3 if new.gflops_per_step else None
    k = forks_of(first)  # the forks previous_ok holds, for the running means
    iterations = (first.iterations or 0) + (new.iterations or 0)
    energy = power.combine([_reading(first), _reading(new)])
    quiet = [q for q in (first.quiet, new.quiet) if q is not None]
    noisy = (s is not None and s.noisy) or spread > timing.NOISY_IQR_FRACTION
    return dataclasses.replace(
        new,
        **_shared(first, new, achieved),
        latency_ms_median=median,
        latency_ms_p10=s and s.p10,
        latency_ms_p90=s and s.p90,
        latency_ms_p99=s and s.p99,
        latency_ms_iqr=s and s.iqr,
        iterations=iterations,
        throughput_ips=new.batch_size / (median / 1e3),
        host_ms_per_iter=_mean(first.host_ms_per_iter, k, new.host_ms_per_iter),
        issue_ms_per_iter=_mean(first.issue_ms_per_iter, k, new.issue_ms_per_iter),
        # repeat_spread stays the spread inside one process (the largest fork's), the spread
        # between processes is fork_spread
        repeat_spread=_largest(first.repeat_spread, new.repeat_spread),
        noisy=bool(noisy or first.noisy or new.noisy),
        quiet_wait_s=_total(first.quiet_wait_s, new.quiet_wait_s),
        quiet=all(quiet) if quiet else None,
        **power.fields(energy, iterations * new.batch_size),
        forks=k + 1,
        fork_medians_ms=medians,
        fork_spread=spread,
        fork_samples=[len(g) for g in groups],
        samples_ms=samples,
    )


def _shared(first: Result, new: Result, achieved: float | None) -> dict:
    """What every scenario's combined Result takes alike: fork 0's own fields, the FLOP rate
    ``achieved`` against the peak, the largest memory and load, the times added up, and every
    preparation's median, fork after fork."""
    peak = new.peak_tflops or first.peak_tflops
    return {
        **{name: getattr(first, name) for name in FIRST_FORK_FIELDS},
        "tflops_achieved": achieved,
        "peak_tflops": peak,
        "peak_probe": new.peak_probe if new.peak_tflops else first.peak_probe,
        **probes.mfu_fields(achieved, peak),  # never above 100%: a row over its peak is flagged
        "peak_memory_mb": _largest(first.peak_memory_mb, new.peak_memory_mb),
        "warmup_s": _total(first.warmup_s, new.warmup_s),
        "measure_s": _total(first.measure_s, new.measure_s),
        "foreign_cpu": _largest(first.foreign_cpu, new.foreign_cpu),  # under load in any fork
        "repeat_medians_ms": [*first.repeat_medians_ms, *new.repeat_medians_ms],
    }


# the figures of an offline or server Result that serve.pool combines
SERVING_FIELDS = ("latency_ms_median", "latency_ms_p10", "latency_ms_p90", "latency_ms_p99",
                  "latency_ms_p999", "latency_ms_iqr", "throughput_ips", "offered_rate",
                  "achieved_rate", "sustained", "mean_batch", "max_batch", "requests",
                  "backlog_at_end", "iterations", "samples_ms", "peak_tries")  # fmt: skip


def _combine_serving(first: Result, new: Result) -> Result:
    """``combine`` for an offline or server Result: its figures pooled as serve.pool pools
    repeats (a peak search keeps the lower peak), the rest as for any row."""
    figures = serve.pool(
        {n: getattr(first, n) for n in SERVING_FIELDS}, {n: getattr(new, n) for n in SERVING_FIELDS}
    )
    medians = [*fork_medians(first), *([new.latency_ms_median] if new.latency_ms_median else [])]
    achieved = serve.tflops_served(new.gflops_per_image, figures["throughput_ips"])
    k = forks_of(first)
    energy = power.combine([_reading(first), _reading(new)])
    return dataclasses.replace(
        new,
        **_shared(first, new, achieved),
        **figures,
        noisy=bool(first.noisy or new.noisy)
        or (len(medians) > 1 and timing.spread(medians) > timing.NOISY_IQR_FRACTION),
        **power.fields(energy, figures["requests"] or 0),
        forks=k + 1,
        fork_medians_ms=medians,
        fork_spread=timing.spread(medians) if medians else None,
    )


def _largest(*values: float | None) -> float | None:
    return max((v for v in values if v is not None), default=None)


def _mean(old: float | None, k: int, new: float | None) -> float | None:
    """The mean over k + 1 forks of k forks' mean ``old`` and one more ``new``."""
    if old is None or new is None:
        return new if old is None else old
    return (old * k + new) / (k + 1)


def _total(a: float | None, b: float | None) -> float | None:
    return None if a is None and b is None else (a or 0.0) + (b or 0.0)


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
        return combine(state[config.key()].ok if config.key() in state else None, result)
    if forks > 1:
        result = dataclasses.replace(result, error=f"fork {k + 1} of {forks}: {result.error or ''}")
    return result
