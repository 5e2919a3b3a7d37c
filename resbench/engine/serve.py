"""A prepared row's streams driven through its scenario: offline, server at a rate, or the peak search.

``measure`` prepares a Config (``resbench/engine/preparation.py``: one call per stream) and warms
its first stream up; for an offline or server Config it then hands the Prepared to ``run``, which

- gives each stream a thread of its own for all its runs (``StreamThreads``; on CUDA a CUDA stream
  of its own too, synchronised at the end of each call), and warms every stream with a short
  offline run;
- offline: every stream busy with full batches for the budget (at least three calls a stream);
- server: seeded Poisson arrivals at ``config.rate`` through the dynamic batcher
  (``scenarios.server``), for a window of the budget or long enough for ``MIN_REQUESTS`` requests,
  whichever is longer, but at most ``max(budget, MAX_WINDOW_S)``;
- server with ``target_p99_ms``: the offline capacity C of the same streams and batch first, then
  ``peak.peak_search`` over offered rates in [C / 4, 1.2 C] (a server cannot outrun its own
  offline throughput, as batches are never fuller; below C / 4 by quarters where C / 4 fails, but
  never below ``rate_floor``, where a window would hold fewer than MIN_TRY_REQUESTS requests), every
  rate tried kept in ``peak_tries``.

and returns the Result's figures as a dict of its fields (``samples_ms`` the raw latencies: per call
offline, per request from its scheduled arrival in a server run). A batch the batcher forms below the
Config's batch size runs the full batch anyway (its images padded with the Config's inputs): every
backend has static shapes here (ONNX exports, compiled graphs, CUDA graphs), so a partial batch costs
what a full one does, and ``mean_batch`` says how full they were. ``pool`` combines the figures of
independent runs of one Config (repeats, forks), and ``pool_forks`` the figures of a sweep's forks'
Results.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable, Sequence

import numpy as np
import torch

from resbench.engine import peak, scenarios, timing

# a server run's requests at least, where the window allows (p99 of 1000 is the 10th slowest), for
# arrivals of at most MAX_WINDOW_S, or the budget if that is longer
MIN_REQUESTS, MAX_WINDOW_S = 1000, 10.0
# the least requests a rate of the peak search is judged on: its rates stay at or above the floor
# MIN_TRY_REQUESTS / the longest window (10 req/s with the default budget; a longer --budget
# reaches lower rates), so that no rate passes or fails on the p99 of a handful of requests
MIN_TRY_REQUESTS = 100
PEAK_STEPS = 5  # bisections of the peak search after its two ends: 7 rates, to 1/32 of the range
PEAK_LOW, PEAK_HIGH = 0.25, 1.2  # the searched rates, as fractions of the offline capacity
MIN_CALLS = 3  # offline: at least this many calls a stream
WARM_CALLS = 2  # calls a stream before any clock starts


class StreamThreads:
    """Where every run of a row's scenario runs its streams: stream 0 in the calling thread (the one
    that prepared and warmed the row up), each other stream on a long-lived thread of its own.

    A scenario's runs (the warm-up, the offline probe, every rate of a peak search) would each
    start threads of their own; here stream i's loop, and so every call it makes, runs on the same
    thread for the whole row, so what a thread sets up on its first call (its OpenMP team,
    oneDNN's scratchpad, its CUDA stream) is paid once, in the warm-up, and no call is handed from
    one thread to another. Stream 0 stays in the calling thread because PyTorch's calls ran 1.2-1.6x
    slower in any other thread than in the one that prepared them on a 2-core EPYC (resnet18 b1:
    29-38 ms against 40-50 ms, page faults and denormals ruled out), so a one-stream row measures
    what single-stream does. ``run(targets)`` is the engine's ``run_on``.
    """

    def __init__(self, streams: int) -> None:
        self._queues: list[queue.SimpleQueue] = [queue.SimpleQueue() for _ in range(streams - 1)]
        self._threads = [
            threading.Thread(target=self._serve, args=(q,), daemon=True) for q in self._queues
        ]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _serve(jobs: queue.SimpleQueue) -> None:
        while (job := jobs.get()) is not None:
            target, done, errors = job
            try:
                target()
            except BaseException as exc:  # re-raised in the thread that called run()
                errors.append(exc)
            done.set()

    def run(self, targets: list[Callable[[], None]]) -> None:
        """Run target 0 here and target i on thread i, all at once; re-raise the first exception
        once all have ended (each target ends on its run's own bounds)."""
        first, *rest = targets
        jobs = [(target, threading.Event(), []) for target in rest]
        for q, job in zip(self._queues, jobs, strict=True):
            q.put(job)
        errors: list[BaseException] = []
        try:
            first()
        except BaseException as exc:
            errors.append(exc)
        finally:
            for _, done, _ in jobs:
                done.wait()
        errors += [exc for _, _, errs in jobs for exc in errs]
        if errors:
            raise errors[0]

    def close(self) -> None:
        for q in self._queues:
            q.put(None)
        for thread in self._threads:
            thread.join()


def stream_calls(prepared) -> list[Callable[[], object]]:
    """Stream i's call: the Prepared's i-th step, returning when the device is done (on a GPU on a
    CUDA stream of its own)."""
    device = prepared.device
    calls = []
    for step in prepared.streams:
        if device.type == "cuda":
            stream = torch.cuda.Stream(device)

            def on_stream(step=step, stream=stream) -> None:
                with torch.cuda.stream(stream):
                    step()
                stream.synchronize()

            calls.append(on_stream)
        else:

            def call(step=step) -> None:
                step()
                timing.synchronize(device)

            calls.append(call)
    return calls


def rate_floor(budget_s: float) -> float:
    """The lowest rate the peak search tries: MIN_TRY_REQUESTS in the longest window."""
    return MIN_TRY_REQUESTS / max(budget_s, MAX_WINDOW_S)


def window_s(rate: float, budget_s: float) -> float:
    """How long a server run offers requests at ``rate``: the budget, or MIN_REQUESTS' worth if
    longer, but at most max(budget, MAX_WINDOW_S)."""
    return min(max(budget_s, MIN_REQUESTS / rate), max(budget_s, MAX_WINDOW_S))


def server_at(make_call, run_on, config, rate: float, budget_s: float) -> scenarios.ServerResult:
    """One server run of ``config``'s streams and batch at ``rate``, bounded in requests and time
    (arrivals in the window, then as long again a fifth of it to drain)."""
    window = window_s(rate, budget_s)
    return scenarios.server(
        make_call,
        config.streams,
        config.batch_size,
        rate,
        max_queue_ms=config.max_queue_ms,
        requests=max(1, math.ceil(2 * rate * window)),  # the window, not the count, ends it
        max_seconds=window / scenarios.ARRIVAL_SHARE,
        seed=0,
        run_on=run_on,
    )


def _latency_fields(latencies_ms: Sequence[float] | None) -> dict:
    """The Result's latency figures of raw latencies (None for every one without any)."""
    if not latencies_ms:
        names = ("median", "p10", "p90", "p99", "p999", "iqr")
        return {f"latency_ms_{n}": None for n in names}
    s = timing.stats(list(latencies_ms))
    p = scenarios.percentiles_ms(latencies_ms)
    return {
        "latency_ms_median": s.median,
        "latency_ms_p10": s.p10,
        "latency_ms_p90": s.p90,
        "latency_ms_p99": s.p99,
        "latency_ms_p999": p["latency_ms_p999"],
        "latency_ms_iqr": s.iqr,
    }


def offline_fields(o: scenarios.OfflineResult) -> dict:
    return {
        **_latency_fields(o.calls_ms),
        "throughput_ips": o.throughput_ips,
        "achieved_rate": o.throughput_ips,
        "mean_batch": float(o.batch_size),
        "max_batch": o.batch_size,
        "requests": o.images,
        "iterations": len(o.calls_ms),
        "samples_ms": list(o.calls_ms),
    }


def server_fields(r: scenarios.ServerResult) -> dict:
    done = [x for x in r.latencies_ms if not math.isnan(x)]
    return {
        **_latency_fields(done if r.sustained else None),
        "throughput_ips": r.achieved_rate,
        "offered_rate": r.offered_rate,
        "achieved_rate": r.achieved_rate,
        "sustained": r.sustained,
        "mean_batch": r.mean_batch,
        "max_batch": max(r.batch_sizes, default=0),
        "requests": r.requests,
        "backlog_at_end": r.backlog_at_end,
        "iterations": len(r.batch_sizes),
        "samples_ms": done,
    }


def _tried(t: peak.Try) -> dict:
    r = t.result
    return {
        "rate": t.rate,
        "sustained": r.sustained,
        "met": t.passed,
        "latency_ms_p99": r.latency_ms_p99,
        "achieved_rate": r.achieved_rate,
        "mean_batch": r.mean_batch,
    }


def peak_fields(search: peak.PeakResult) -> dict:
    """The search's best run as the Result's figures (offered_rate: the highest rate that met the
    bound); with none, not sustained and no latency."""
    tries = [_tried(t) for t in search.tries]
    if search.best is None:
        return {
            **_latency_fields(None),
            "offered_rate": None,
            "achieved_rate": None,
            "throughput_ips": None,
            "sustained": False,
            "requests": sum(t.result.requests for t in search.tries),
            "iterations": sum(len(t.result.batch_sizes) for t in search.tries),
            "samples_ms": [],
            "peak_tries": tries,
        }
    return server_fields(search.best) | {"peak_tries": tries}


def run(prepared, budget_s: float) -> dict:
    """The Config's scenario on the Prepared's streams (warmed up first); the Result's figures."""
    calls = stream_calls(prepared)
    threads = StreamThreads(len(calls))
    try:
        return _run(prepared.config, lambda i: lambda ids: calls[i](), threads.run, budget_s)
    finally:
        threads.close()


def _run(config, make_call, run_on, budget_s: float) -> dict:
    streams, batch = config.streams, config.batch_size
    warm = scenarios.offline(
        make_call, streams, batch, images=WARM_CALLS * streams * batch, run_on=run_on
    )
    call_s = float(np.median(warm.calls_ms)) / 1e3
    if config.scenario == "offline":
        seconds = max(budget_s, MIN_CALLS * call_s)
        return offline_fields(
            scenarios.offline(make_call, streams, batch, seconds=seconds, run_on=run_on)
        )
    if config.target_p99_ms is None:
        return server_fields(server_at(make_call, run_on, config, config.rate, budget_s))
    probe = scenarios.offline(
        make_call, streams, batch, seconds=max(budget_s, MIN_CALLS * call_s), run_on=run_on
    )
    if probe.throughput_ips <= 0:
        raise RuntimeError("the offline run before the peak search completed no call")
    floor = rate_floor(budget_s)
    low = max(PEAK_LOW * probe.throughput_ips, floor)
    search = peak.peak_search(
        lambda rate: server_at(make_call, run_on, config, rate, budget_s),
        config.target_p99_ms,
        low,
        max(PEAK_HIGH * probe.throughput_ips, 2 * low),
        steps=PEAK_STEPS,
        floor=floor,
    )
    return peak_fields(search)


def tflops_served(gflops_per_image: float | None, throughput_ips: float | None) -> float | None:
    """TFLOP/s of the images a scenario served (a padded batch's padding does no useful work)."""
    if not throughput_ips or not gflops_per_image:
        return None
    return gflops_per_image * throughput_ips / 1e3


def expected_s(config, budget_s: float, step_s: float) -> float:
    """About how long ``run`` takes for ``config`` with one call taking ``step_s`` on one stream
    with all the cores: the sweep's ETA (each stream's call is slower by its share of the cores)."""
    call_s = step_s * config.streams
    warm = WARM_CALLS * call_s
    offline = max(budget_s, MIN_CALLS * call_s)
    if config.scenario == "offline":
        return warm + offline
    if config.target_p99_ms is None:
        return warm + window_s(config.rate, budget_s) + call_s
    capacity = config.batch_size / max(step_s, 1e-6)  # images a second, every stream together
    # the bisection's rates if the peak lies at ~0.8 of capacity: a rate that fails runs to its end
    tries = [(PEAK_LOW, True), (PEAK_HIGH, False), (0.725, True), (0.96, False), (0.84, False)]
    tries += [(0.78, True), (0.81, False)]
    runs = sum(
        window_s(f * capacity, budget_s) / (1.0 if ok else scenarios.ARRIVAL_SHARE)
        for f, ok in tries[: 2 + PEAK_STEPS]
    )
    return warm + offline + runs


# the figures of an offline or server Result that ``pool`` pools
FIGURES = ("latency_ms_median", "latency_ms_p10", "latency_ms_p90", "latency_ms_p99",
           "latency_ms_p999", "latency_ms_iqr", "throughput_ips", "offered_rate", "achieved_rate",
           "sustained", "mean_batch", "max_batch", "requests", "backlog_at_end", "iterations",
           "samples_ms", "peak_tries")  # fmt: skip


def pool_forks(first, new, earlier_medians: Sequence[float]) -> dict:
    """An offline or server Config's figures over processes, and its fork record: ``first`` is
    the Result of the processes so far (``earlier_medians`` their medians), ``new`` one more
    process's. The figures pool as ``pool`` pools repeats (a peak search keeps the lower peak);
    the row is noisy where either was, or where the forks' medians are further apart than
    ``timing.NOISY_IQR_FRACTION``."""
    figures = pool({n: getattr(first, n) for n in FIGURES}, {n: getattr(new, n) for n in FIGURES})
    medians = [*earlier_medians, *([new.latency_ms_median] if new.latency_ms_median else [])]
    return figures | {
        "noisy": bool(first.noisy or new.noisy)
        or (len(medians) > 1 and timing.spread(medians) > timing.NOISY_IQR_FRACTION),
        "forks": (first.forks or 1) + 1,
        "fork_medians_ms": medians,
        "fork_spread": timing.spread(medians) if medians else None,
    }


def pool(first: dict, other: dict) -> dict:
    """The figures of two independent runs of one scenario Config (repeats, forks) as one.

    Offline and fixed-rate server runs pool their latencies (percentiles of both), sustained only
    if both were; rates are means. A peak search keeps the lower peak, the one both processes
    served (None if either found none), with that run's figures, and every rate either tried.
    """
    if first.get("peak_tries") or other.get("peak_tries"):
        tries = [*first.get("peak_tries", []), *other.get("peak_tries", [])]
        rates = [d.get("offered_rate") for d in (first, other)]
        if None in rates:
            lower = first if rates[0] is None else other
        else:
            lower = first if rates[0] <= rates[1] else other
        return lower | {"peak_tries": tries}
    sustained = [d["sustained"] for d in (first, other) if d.get("sustained") is not None]
    both_sustained = all(sustained) if sustained else None
    samples = [*first["samples_ms"], *other["samples_ms"]]
    n1, n2 = first.get("iterations") or 0, other.get("iterations") or 0
    out = dict(other)
    out.update(_latency_fields(samples if both_sustained is not False else None))
    for name in ("throughput_ips", "achieved_rate"):
        a, b = first.get(name), other.get(name)
        out[name] = None if a is None or b is None else (a + b) / 2
    if first.get("mean_batch") is not None and other.get("mean_batch") is not None and n1 + n2:
        out["mean_batch"] = (first["mean_batch"] * n1 + other["mean_batch"] * n2) / (n1 + n2)
    out["max_batch"] = max(first.get("max_batch") or 0, other.get("max_batch") or 0)
    out["requests"] = (first.get("requests") or 0) + (other.get("requests") or 0)
    out["iterations"] = n1 + n2
    out["sustained"] = both_sustained
    backlogs = [d["backlog_at_end"] for d in (first, other) if d.get("backlog_at_end") is not None]
    out["backlog_at_end"] = max(backlogs) if backlogs else None
    out["samples_ms"] = samples
    return out
