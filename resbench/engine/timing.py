"""The clock: per-iteration device times, warm-up until settled, adaptive sampling until the median is known.

One callable is timed in blocks of iterations. Each block yields one sample per iteration:

- CUDA: a ``torch.cuda.Event(enable_timing=True)`` is recorded between iterations, with no
  synchronisation inside a block; one sync at the block's end. The samples are device times.
- CPU: ``time.perf_counter_ns`` around each iteration (the harness adds well under a microsecond).
- MPS: ``torch.mps.synchronize()`` after each iteration, timed with ``perf_counter_ns``.

Beside the device samples each block records the host's wall clock over the whole block (with its final
sync) and the time the host took to issue the block's work: on a GPU, issue time close to wall time means
the host's kernel launches, not the device, set the pace. Like ``torch.utils.benchmark``, raw samples are
kept and statistics derived from them; nothing is rounded here.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import psutil
import torch

# fork medians further apart than this (slowest over fastest) describe two machines, not one row:
# such a row gets no headline figure. The committed A/A runs' widest honest spread between two
# processes of one row is 3.4x over 30 processes (small_resnet56 b1 on a shared 2-core host), most
# rows stay within 1.3x; 2x between the few forks of one run is beyond what a figure can summarise
FORKS_DISAGREE = 2.0
NOISY_IQR_FRACTION = (
    0.10  # torch.utils.benchmark flags a measurement as noisy above this IQR/median
)


def spread(medians: Sequence[float]) -> float:
    """(max - min) / median of independent measurements' medians (repeats, forks); 0 for one."""
    middle = float(np.median(medians))
    return (max(medians) - min(medians)) / middle if middle > 0 else 0.0


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


@dataclass
class Samples:
    """Raw timings of one measured callable."""

    samples_ms: list[float] = field(default_factory=list)  # device time of each iteration
    # host wall clock per block, sync included
    block_wall_ms: list[float] = field(default_factory=list)
    block_issue_ms: list[float] = field(default_factory=list)  # host time to issue a block, no sync
    block_iters: list[int] = field(default_factory=list)

    def extend(self, other: Samples) -> None:
        self.samples_ms += other.samples_ms
        self.block_wall_ms += other.block_wall_ms
        self.block_issue_ms += other.block_issue_ms
        self.block_iters += other.block_iters

    @property
    def wall_s(self) -> float:
        return sum(self.block_wall_ms) / 1e3

    def host_ms_per_iter(self) -> float:
        """Median over blocks of host wall time per iteration."""
        return float(np.median(np.divide(self.block_wall_ms, self.block_iters)))

    def issue_ms_per_iter(self) -> float:
        return float(np.median(np.divide(self.block_issue_ms, self.block_iters)))


def time_block(fn: Callable[[], object], n: int, device: torch.device) -> Samples:
    """Run ``fn`` n times and time each iteration on ``device``'s clock."""
    if device.type == "cuda":
        events = [torch.cuda.Event(enable_timing=True) for _ in range(n + 1)]
        t0 = time.perf_counter_ns()
        events[0].record()
        for i in range(n):
            fn()
            events[i + 1].record()
        t_issue = time.perf_counter_ns()
        events[-1].synchronize()
        t1 = time.perf_counter_ns()
        samples = [events[i].elapsed_time(events[i + 1]) for i in range(n)]
    else:
        samples = [0.0] * n
        sync_each = device.type == "mps"
        clock = time.perf_counter_ns
        t0 = clock()
        for i in range(n):
            a = clock()
            fn()
            if sync_each:
                torch.mps.synchronize()
            samples[i] = (clock() - a) / 1e6
        t_issue = t1 = clock()
    return Samples(samples, [(t1 - t0) / 1e6], [(t_issue - t0) / 1e6], [n])


def median_ci_fraction(samples: list[float]) -> float:
    """Half-width of a ~95% confidence interval of the median, as a fraction of it (order statistics)."""
    n = len(samples)
    if n < 6:
        return math.inf
    s = sorted(samples)
    half = 1.96 * math.sqrt(n) / 2
    lo, hi = max(0, math.floor(n / 2 - half)), min(n - 1, math.ceil(n / 2 + half))
    med = float(np.median(s))
    return (s[hi] - s[lo]) / 2 / med if med > 0 else math.inf


def _block_size(per_iter_ms: float, block_s: float, max_block: int) -> int:
    return max(1, min(max_block, int(block_s * 1e3 / max(per_iter_ms, 1e-6))))


def warmup(
    fn: Callable[[], object],
    device: torch.device,
    max_s: float,
    tolerance: float = 0.05,
    block_s: float = 0.05,
) -> tuple[Samples, float]:
    """Run blocks until two consecutive block medians agree within ``tolerance``, or ``max_s`` ends.

    Returns the warm-up samples and its wall time in seconds. Compilation and cuDNN autotuning happen
    here (or in the first call, which the caller times separately), never in the measured region.
    """
    start = time.perf_counter()
    warm = time_block(fn, 1, device)
    previous = None
    while True:
        n = _block_size(float(np.median(warm.samples_ms[-8:])), block_s, 256)
        block = time_block(fn, n, device)
        warm.extend(block)
        current = float(np.median(block.samples_ms))
        settled = previous is not None and abs(current - previous) <= tolerance * previous
        if settled or time.perf_counter() - start >= max_s:
            break
        previous = current
    return warm, time.perf_counter() - start


def autorange(
    fn: Callable[[], object],
    device: torch.device,
    budget_s: float,
    per_iter_ms: float,
    target_ci: float = 0.01,
    min_iters: int = 3,
    max_iters: int = 100_000,
    block_s: float = 0.1,
) -> Samples:
    """Sample in blocks until the median is known to ``target_ci`` (95% CI half-width) or the budget ends.

    Like ``torch.utils.benchmark.Timer.adaptive_autorange``; at least ``min_iters`` iterations.
    """
    out = Samples()
    start = time.perf_counter()
    # smaller blocks when the budget is short, so the stop rule is checked often enough
    block_s = min(block_s, max(budget_s / 10, 0.005))
    while True:
        n = _block_size(per_iter_ms, block_s, 1024)
        out.extend(time_block(fn, n, device))
        per_iter_ms = float(np.median(out.samples_ms))
        count = len(out.samples_ms)
        if count >= max_iters:
            break
        out_of_time = time.perf_counter() - start >= budget_s
        # the CI of a median needs ~10 samples before it means anything
        known = count >= max(min_iters, 10) and median_ci_fraction(out.samples_ms) <= target_ci
        if known or (out_of_time and count >= min_iters):
            break
    return out


@dataclass(frozen=True)
class Stats:
    median: float
    p10: float
    p90: float
    p99: float
    iqr: float
    mean: float

    @property
    def noisy(self) -> bool:
        return self.iqr / self.median > NOISY_IQR_FRACTION if self.median > 0 else True


def stats(samples_ms: list[float]) -> Stats:
    a = np.asarray(samples_ms, dtype=np.float64)
    p10, p25, p50, p75, p90, p99 = np.percentile(a, [10, 25, 50, 75, 90, 99])
    return Stats(float(p50), float(p10), float(p90), float(p99), float(p75 - p25), float(a.mean()))


def fork_stats(groups: Sequence[Sequence[float]]) -> Stats:
    """Stats of several processes' samples with each process weighted equally, as the headline
    (the median of the process medians) weights them: a fork of 305 fast iterations and one of 3
    slow ones count alike, so the percentiles describe the same mixture the median does, and p99
    is never below the median (pooling every sample let the fast fork's many samples set p99
    under a median between the two). The median is the median of the group medians."""
    groups = [np.asarray(g, dtype=np.float64) for g in groups if len(g)]
    values = np.concatenate(groups)
    weights = np.concatenate([np.full(len(g), 1.0 / (len(g) * len(groups))) for g in groups])
    order = np.argsort(values, kind="stable")
    values, cumulative = values[order], np.cumsum(weights[order])

    def at(q: float) -> float:  # the inverted CDF of the equal-weight mixture
        i = int(np.searchsorted(cumulative, q / 100 - 1e-12, side="left"))
        return float(values[min(i, len(values) - 1)])

    p10, p25, p75, p90, p99 = (at(q) for q in (10, 25, 75, 90, 99))
    median = float(np.median([np.median(g) for g in groups]))
    mean = float(np.mean([g.mean() for g in groups]))
    return Stats(median, p10, p90, p99, p75 - p25, mean)


def split_forks(samples_ms: Sequence[float], medians: Sequence[float]) -> list[list[float]] | None:
    """The samples of each fork, recovered from forks' samples laid end to end (in fork order)
    and their medians, for rows written before ``fork_samples`` was recorded: the split whose
    every part has exactly its fork's median. None where no split has (a fork's median came from
    its repeats' medians, or the samples were not kept)."""
    samples = list(samples_ms)

    def parts(start: int, k: int) -> list[list[float]] | None:
        if k == len(medians) - 1:
            rest = samples[start:]
            return [rest] if rest and float(np.median(rest)) == medians[k] else None
        for end in range(start + 1, len(samples) - (len(medians) - k - 1) + 1):
            if float(np.median(samples[start:end])) == medians[k]:
                tail = parts(end, k + 1)
                if tail is not None:
                    return [samples[start:end], *tail]
        return None

    return parts(0, 0) if medians and samples else None


def forks_disagree(medians: Sequence[float], factor: float | None = None) -> bool:
    """Whether a row's fork medians are more than FORKS_DISAGREE apart (slowest over fastest): then
    no single figure describes the row, and none is shown as its headline."""
    factor = FORKS_DISAGREE if factor is None else factor
    return len(medians) >= 2 and min(medians) > 0 and max(medians) / min(medians) > factor


def one_fork(result) -> dict:
    """The fork record of a Result measured in one process: one fork, its median, its samples."""
    median = result.latency_ms_median
    return {
        "forks": 1,
        "fork_medians_ms": [median] if median is not None else [],
        "fork_spread": 0.0,
        "fork_samples": [len(result.samples_ms)] if result.samples_ms else [],
    }


def pool_forks(first, new, earlier_medians: Sequence[float], earlier_groups: Sequence) -> dict:
    """A single-stream Config's timing statistics over processes, and its fork record: ``first``
    is the Result of the processes so far (``earlier_medians`` and ``earlier_groups`` their
    medians and samples, groups [] where they cannot be told apart), ``new`` one more process's.

    The median is the median of the fork medians, the percentiles those of every fork's samples
    with each fork weighted equally (``fork_stats``), so they describe what the median does;
    unknown rather than pooled where the forks cannot be told apart. Iterations and waits add up,
    the host times are means over the forks. ``repeat_spread`` stays the spread inside one process
    (the largest fork's); the spread between processes is ``fork_spread``."""
    medians = [*earlier_medians, new.latency_ms_median]
    median, apart = statistics.median(medians), spread(medians)
    groups = [*earlier_groups, list(new.samples_ms)] if earlier_groups and new.samples_ms else []
    s = fork_stats(groups) if groups else None
    k = first.forks or 1  # the forks ``first`` holds, for the running means
    quiet = [q for q in (first.quiet, new.quiet) if q is not None]
    noisy = (s is not None and s.noisy) or apart > NOISY_IQR_FRACTION
    return {
        "latency_ms_median": median,
        "latency_ms_p10": s and s.p10,
        "latency_ms_p90": s and s.p90,
        "latency_ms_p99": s and s.p99,
        "latency_ms_iqr": s and s.iqr,
        "iterations": (first.iterations or 0) + (new.iterations or 0),
        "throughput_ips": new.batch_size / (median / 1e3),
        "host_ms_per_iter": _mean(first.host_ms_per_iter, k, new.host_ms_per_iter),
        "issue_ms_per_iter": _mean(first.issue_ms_per_iter, k, new.issue_ms_per_iter),
        "repeat_spread": _largest(first.repeat_spread, new.repeat_spread),
        "noisy": bool(noisy or first.noisy or new.noisy),
        "quiet_wait_s": _total(first.quiet_wait_s, new.quiet_wait_s),
        "quiet": all(quiet) if quiet else None,
        "forks": k + 1,
        "fork_medians_ms": medians,
        "fork_spread": apart,
        "fork_samples": [len(g) for g in groups],
        "samples_ms": [*first.samples_ms, *new.samples_ms],
    }


def pool_clock(first, new) -> dict:
    """What every scenario's Result over processes takes alike from the clock: the warm-up and
    measured seconds added up, the most foreign load any process saw, and every preparation's
    median, fork after fork."""
    return {
        "warmup_s": _total(first.warmup_s, new.warmup_s),
        "measure_s": _total(first.measure_s, new.measure_s),
        "foreign_cpu": _largest(first.foreign_cpu, new.foreign_cpu),  # under load in any fork
        "repeat_medians_ms": [*first.repeat_medians_ms, *new.repeat_medians_ms],
    }


def _largest(*values: float | None) -> float | None:
    return max((v for v in values if v is not None), default=None)


def _mean(old: float | None, k: int, new: float | None) -> float | None:
    """The mean over k + 1 forks of k forks' mean ``old`` and one more ``new``."""
    if old is None or new is None:
        return new if old is None else old
    return (old * k + new) / (k + 1)


def _total(a: float | None, b: float | None) -> float | None:
    return None if a is None and b is None else (a or 0.0) + (b or 0.0)


class ForeignCpu:
    """How many of this process's CPUs other processes kept busy over an interval (0 = quiet machine).

    System-wide busy time on the CPUs this process may run on (psutil, from /proc/stat on Linux) minus
    this process's own CPU time, divided by the wall time.
    """

    def __init__(self) -> None:
        self._proc = psutil.Process()
        try:
            self._cpus = sorted(self._proc.cpu_affinity())
        except (AttributeError, psutil.Error):  # macOS has no affinity
            self._cpus = None

    def _busy(self) -> float:
        per_cpu = psutil.cpu_times(percpu=True)
        chosen = (
            per_cpu if self._cpus is None else [per_cpu[i] for i in self._cpus if i < len(per_cpu)]
        )
        idle = sum(t.idle + getattr(t, "iowait", 0.0) for t in chosen)
        total = sum(sum(t) for t in chosen)
        # guest time is already counted inside user time on Linux
        total -= sum(getattr(t, "guest", 0.0) + getattr(t, "guest_nice", 0.0) for t in chosen)
        return total - idle

    def _own(self) -> float:
        t = self._proc.cpu_times()
        return t.user + t.system

    def __enter__(self) -> ForeignCpu:
        self._t0, self._busy0, self._own0 = time.perf_counter(), self._busy(), self._own()
        self.cores = 0.0
        return self

    def __exit__(self, *exc) -> None:
        wall = time.perf_counter() - self._t0
        foreign = (self._busy() - self._busy0) - (self._own() - self._own0)
        self.cores = max(0.0, foreign / wall) if wall > 0 else 0.0


# A run counts as loaded when the median row saw a quarter of a core busy elsewhere, or any row half a
# core (a row is "under load" at the first): on a 2-core machine one busy neighbour slows a CPU
# measurement by up to 2x. The report says so (report.load_warning); --wait-quiet waits for less.
LOAD_MEDIAN_CORES = 0.25
LOAD_ANY_CORES = 0.5


def wait_quiet(
    max_s: float, threshold: float = LOAD_MEDIAN_CORES, window_s: float = 0.5
) -> tuple[float, bool]:
    """Wait until other processes keep fewer than ``threshold`` cores busy over ``window_s``.

    Returns the seconds waited and whether the machine became quiet within ``max_s``.
    """
    start = time.perf_counter()
    while True:
        with ForeignCpu() as foreign:
            time.sleep(window_s)
        waited = time.perf_counter() - start
        if foreign.cores < threshold:
            return waited, True
        if waited >= max_s:
            return waited, False
