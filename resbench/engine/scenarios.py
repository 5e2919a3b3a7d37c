"""How calls are issued and what latency means: offline and server scenarios, and the peak search.

The engine works on plain callables, so it needs no model. A *stream* is one independent executor
(an OpenVINO infer request, an ONNX Runtime session, a PyTorch thread with its own intra-op pool, a
CUDA stream), driven by a thread of its own. ``make_call(stream)`` is called once per stream, before
the clock starts, and returns that stream's executor: an object with ``submit(ids) -> None``
(the ``Executor`` protocol) or a plain callable ``call(ids)``. Each call runs one batch, the
request ids of its images, and returns when the work is done (synchronised). Warm-up is the
caller's: the engine times from its first call. An exception in a call reaches the caller once
every stream has stopped.

- ``offline(make_call, streams, batch_size, images=, seconds=)``: every stream busy with full
  batches back to back until ``images`` were issued or ``seconds`` passed. Records images/s and the
  per-request latency, which offline is the duration of the call that served the request (every
  request is in flight from the start, so a latency from issue would only measure the queue).
- ``server(make_call, streams, batch_size, rate, max_queue_ms, requests, max_seconds, seed)``:
  requests of one image arrive as a Poisson process at ``rate`` per second (exponential gaps from a
  seeded ``numpy`` Generator, planned up front). A dynamic batcher hands an idle stream the waiting
  requests as soon as ``batch_size`` of them wait, or the oldest has waited ``max_queue_ms``.
  Latency counts from each request's *scheduled* arrival to its completion, so a stall shows in
  every request that arrived during it (no coordinated omission). The run is *sustained* when the
  queue did not grow without bound (see ``ServerResult``); latency figures of an unsustained run
  are None, never a number.
- The peak search over offered rates (the highest sustained rate whose p99 meets a bound) is
  ``resbench/engine/peak.py``.
- ``check_streams``, ``check_threads``, ``check_rate``: one-line ValueErrors for bad values.

Percentiles are numpy's (linear interpolation) over the raw per-request latencies, which are kept.

Usage: ``scenarios.server(lambda s: session_for(s), streams=2, batch_size=8, rate=300.0)``.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

PERCENTILES = (50.0, 90.0, 99.0, 99.9)
KEEP_UP_FRACTION = 0.9  # second-half completions must reach 90% of second-half arrivals (+ slack)
BACKLOG_FRACTION = 0.1  # the backlog when arrivals end may be 10% of the second half's arrivals
ARRIVAL_SHARE = 0.8  # arrivals are planned in the first 80% of max_seconds; the rest drains


@runtime_checkable
class Executor(Protocol):
    """One stream: ``submit(ids)`` runs one call on those requests and returns when it is done."""

    def submit(self, ids: Sequence[int]) -> None: ...


MakeCall = Callable[[int], "Executor | Callable[[Sequence[int]], object]"]


def positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a whole number of at least 1; got {value!r}")
    return int(value)


def positive_number(value: object, name: str, zero: bool = False) -> float:
    """``value`` as a float if finite and above 0 (or at least 0 with ``zero``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise ValueError(f"{name} must be a number; got {value!r}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        least = "of at least 0" if zero else "above 0"
        raise ValueError(f"{name} must be a finite number {least}; got {value!r}")
    return float(value)


def check_rate(rate: object, name: str = "rate") -> float:
    """``rate`` (requests per second) if finite and above 0, else a one-line ValueError."""
    return positive_number(rate, name)


def check_queue_ms(max_queue_ms: object, name: str = "max_queue_ms") -> float:
    """``max_queue_ms`` (how long a request may wait for a fuller batch) if finite and at least 0,
    else a one-line ValueError."""
    return positive_number(max_queue_ms, name, zero=True)


def check_streams(streams: object, name: str = "streams") -> int:
    """``streams`` if a whole number of at least 1, else a one-line ValueError."""
    return positive_int(streams, name)


def check_threads(
    threads: object,
    streams: int = 1,
    cores: int | None = None,
    oversubscribe: bool = False,
    name: str = "threads",
) -> int:
    """Intra-op ``threads`` per stream if at least 1 and, unless ``oversubscribe``, if
    streams x threads fits in ``cores`` (this machine's when None), else a one-line ValueError."""
    threads = positive_int(threads, name)
    streams = check_streams(streams)
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        cores = cores or 1
    if not oversubscribe and streams * threads > cores:
        raise ValueError(
            f"{streams} stream(s) x {threads} {name} = {streams * threads} exceeds the {cores} "
            "cores; use fewer, or oversubscribe on purpose (--oversubscribe)"
        )
    return threads


def percentiles_ms(latencies_ms: Sequence[float]) -> dict[str, float | None]:
    """``latency_ms_p50``, ``_p90``, ``_p99``, ``_p999`` of raw latencies (None when empty)."""
    names = ("latency_ms_p50", "latency_ms_p90", "latency_ms_p99", "latency_ms_p999")
    if len(latencies_ms) == 0:
        return dict.fromkeys(names)
    values = np.percentile(np.asarray(latencies_ms, dtype=np.float64), PERCENTILES)
    return {n: float(v) for n, v in zip(names, values, strict=True)}


def _submitter(executor: object) -> Callable[[Sequence[int]], object]:
    if isinstance(executor, Executor):
        return executor.submit
    if callable(executor):
        return executor
    raise TypeError(f"make_call must return an Executor or a callable; got {executor!r}")


def _executors(make_call: MakeCall, streams: int) -> list[Callable[[Sequence[int]], object]]:
    return [_submitter(make_call(s)) for s in range(streams)]


RunThreads = Callable[[list[Callable[[], None]]], None]


def run_threads(targets: list[Callable[[], None]]) -> None:
    """Run each target in its own thread, re-raising the first exception after all have stopped
    (a scenario's default ``run_on``: each run starts threads of its own)."""
    errors: list[BaseException] = []

    def guarded(target: Callable[[], None]) -> None:
        try:
            target()
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(t,), daemon=True) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


@dataclass(frozen=True)
class OfflineResult:
    """Every stream busy: images/s and the per-request latency (the duration of its call)."""

    streams: int
    batch_size: int
    images: int  # images completed
    wall_s: float  # first call's start to last call's end
    throughput_ips: float
    latencies_ms: list[float] = field(repr=False)  # one per request, raw
    calls_ms: list[float] = field(repr=False, default_factory=list)  # one per call, in order done
    latency_ms_p50: float | None = None
    latency_ms_p90: float | None = None
    latency_ms_p99: float | None = None
    latency_ms_p999: float | None = None


def offline(
    make_call: MakeCall,
    streams: int,
    batch_size: int,
    images: int | None = None,
    seconds: float | None = None,
    run_on: RunThreads | None = None,
) -> OfflineResult:
    """Issue full batches on every stream until ``images`` were issued or ``seconds`` passed
    (whichever comes first; at least one is needed). Ids count up from 0 across streams.
    ``run_on(targets)`` runs one target per stream concurrently (default: fresh threads)."""
    streams = check_streams(streams)
    batch_size = positive_int(batch_size, "batch_size")
    if images is None and seconds is None:
        raise ValueError("offline needs a bound: images, seconds or both")
    limit = math.inf if images is None else positive_int(images, "images")
    deadline_s = math.inf if seconds is None else positive_number(seconds, "seconds")
    calls = _executors(make_call, streams)
    lock = threading.Lock()
    issued = 0
    latencies: list[float] = []
    call_ms: list[float] = []
    spans: list[tuple[float, float]] = []
    start = threading.Barrier(streams)
    t0 = 0.0

    def stream(call: Callable[[Sequence[int]], object]) -> None:
        nonlocal issued, t0
        if start.wait() == 0:
            t0 = time.perf_counter()
        start.wait()  # every thread sees t0
        while True:
            with lock:
                if issued >= limit or time.perf_counter() - t0 >= deadline_s:
                    return
                ids = range(issued, issued + batch_size)
                issued += batch_size
            begin = time.perf_counter()
            call(ids)
            end = time.perf_counter()
            with lock:
                latencies.extend([(end - begin) * 1e3] * batch_size)
                call_ms.append((end - begin) * 1e3)
                spans.append((begin, end))

    (run_on or run_threads)([lambda c=c: stream(c) for c in calls])
    wall = max(e for _, e in spans) - min(b for b, _ in spans) if spans else 0.0
    return OfflineResult(
        streams=streams,
        batch_size=batch_size,
        images=len(latencies),
        wall_s=wall,
        throughput_ips=len(latencies) / wall if wall > 0 else 0.0,
        latencies_ms=latencies,
        calls_ms=call_ms,
        **percentiles_ms(latencies),
    )


@dataclass(frozen=True)
class ServerResult:
    """A Poisson-arrival run through the dynamic batcher.

    ``sustained`` holds when all of these do: at least one request was offered and every one
    completed before ``max_seconds``; in the second half of the arrival window, completions reached
    ``KEEP_UP_FRACTION`` of arrivals less the slack; and the backlog (arrived, not completed) when
    arrivals ended was at most the slack plus ``BACKLOG_FRACTION`` of the second half's arrivals.
    The slack, 2 x streams x batch_size + rate x max_queue_ms, is what a keeping-up system
    legitimately holds (a full batch running and one forming per stream, and the batcher's window).
    Latency percentiles are None unless sustained; the raw latencies are kept either way.
    """

    streams: int
    batch_size: int
    offered_rate: float  # requests per second asked for
    achieved_rate: float  # completions per second, from the start to the last completion
    max_queue_ms: float
    seed: int
    requests: int  # requests offered (planned arrivals inside the window)
    completed: int
    mean_batch: float
    sustained: bool
    backlog_at_end: int  # arrived but not completed when the last arrival was due
    arrivals_s: list[float] = field(repr=False)  # scheduled arrival of each request, from the start
    latencies_ms: list[float] = field(repr=False)  # by request id; nan where never completed
    batch_sizes: list[int] = field(repr=False)  # every batch the batcher formed, in order
    latency_ms_p50: float | None = None
    latency_ms_p90: float | None = None
    latency_ms_p99: float | None = None
    latency_ms_p999: float | None = None


def plan_arrivals(rate: float, requests: int, window_s: float, seed: int) -> np.ndarray:
    """Scheduled arrival times (s from the start) of up to ``requests`` Poisson arrivals at
    ``rate``, those inside ``window_s``."""
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, size=requests)
    arrivals = np.cumsum(gaps)
    return arrivals[arrivals < window_s]


def server(
    make_call: MakeCall,
    streams: int,
    batch_size: int,
    rate: float,
    max_queue_ms: float = 0.0,
    requests: int = 1000,
    max_seconds: float = 60.0,
    seed: int = 0,
    run_on: RunThreads | None = None,
) -> ServerResult:
    """Offer Poisson arrivals at ``rate`` to ``streams`` executors through the dynamic batcher.

    Args:
        max_queue_ms: how long the oldest waiting request may wait for a fuller batch (0: an idle
            stream takes whatever waits).
        requests: the most requests offered; arrivals are planned inside the first
            ``ARRIVAL_SHARE`` of ``max_seconds``; no batch is handed out after ``max_seconds``
            (a call already running is waited for: it cannot be interrupted).
        run_on: runs one target per stream concurrently and re-raises (default: fresh threads;
            ``serve.StreamThreads.run`` keeps one long-lived thread per stream).
    """
    streams = check_streams(streams)
    batch_size = positive_int(batch_size, "batch_size")
    rate = check_rate(rate)
    max_queue_ms = check_queue_ms(max_queue_ms)
    requests = positive_int(requests, "requests")
    max_seconds = positive_number(max_seconds, "max_seconds")
    arrivals = plan_arrivals(rate, requests, ARRIVAL_SHARE * max_seconds, seed)
    n = len(arrivals)
    max_queue_s = max_queue_ms / 1e3
    calls = _executors(make_call, streams)
    completions = np.full(n, np.nan)
    batches: list[int] = []
    lock = threading.Lock()
    taken = 0  # requests handed to a stream so far (they leave in arrival order)
    t0 = time.perf_counter()
    stop = t0 + max_seconds

    def next_batch() -> range | None:
        """The batch an idle stream takes now, sleeping until one forms; None when done."""
        nonlocal taken
        while True:
            with lock:
                now = time.perf_counter()
                if taken >= n or now >= stop:
                    return None
                arrived = int(np.searchsorted(arrivals, now - t0, side="right"))
                waiting = arrived - taken
                oldest_due = t0 + arrivals[taken] + max_queue_s
                if waiting >= batch_size or (waiting > 0 and (now >= oldest_due or arrived == n)):
                    ids = range(taken, taken + min(waiting, batch_size))
                    taken += len(ids)
                    batches.append(len(ids))
                    return ids
                wake = oldest_due if waiting > 0 else stop
                if arrived < n:
                    wake = min(wake, t0 + arrivals[arrived])
            time.sleep(max(0.0, min(wake, stop) - time.perf_counter()))

    def stream(call: Callable[[Sequence[int]], object]) -> None:
        while (ids := next_batch()) is not None:
            call(ids)
            done = time.perf_counter() - t0
            completions[ids.start : ids.stop] = done  # distinct slices per stream: no lock needed

    (run_on or run_threads)([lambda c=c: stream(c) for c in calls])
    return _server_result(
        arrivals, completions, batches, streams, batch_size, rate, max_queue_ms, seed
    )


def _server_result(
    arrivals: np.ndarray,
    completions: np.ndarray,
    batches: list[int],
    streams: int,
    batch_size: int,
    rate: float,
    max_queue_ms: float,
    seed: int,
) -> ServerResult:
    done = ~np.isnan(completions)
    latencies_ms = (completions - arrivals) * 1e3
    n = len(arrivals)
    end = float(arrivals[-1]) if n else 0.0
    half = end / 2
    arrived_2nd = int(np.count_nonzero(arrivals > half))
    completed_2nd = int(np.count_nonzero((completions > half) & (completions <= end)))
    backlog = int(np.count_nonzero(~done | (completions > end)))  # NaN compares False
    slack = 2 * streams * batch_size + rate * max_queue_ms / 1e3
    sustained = bool(
        n > 0
        and done.all()
        and completed_2nd >= KEEP_UP_FRACTION * arrived_2nd - slack
        and backlog <= slack + BACKLOG_FRACTION * arrived_2nd
    )
    last = float(np.nanmax(completions)) if done.any() else 0.0
    figures = percentiles_ms(latencies_ms[done]) if sustained else percentiles_ms([])
    return ServerResult(
        streams=streams,
        batch_size=batch_size,
        offered_rate=rate,
        achieved_rate=int(done.sum()) / last if last > 0 else 0.0,
        max_queue_ms=max_queue_ms,
        seed=seed,
        requests=n,
        completed=int(done.sum()),
        mean_batch=float(np.mean(batches)) if batches else 0.0,
        sustained=sustained,
        backlog_at_end=backlog,
        arrivals_s=arrivals.tolist(),
        latencies_ms=latencies_ms.tolist(),
        batch_sizes=list(batches),
        **figures,
    )
