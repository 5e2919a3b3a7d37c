"""The scenario engine on fake calls that sleep: no model, bounds derived from the sleeps only."""

from __future__ import annotations

import math
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from resbench.engine import scenarios
from resbench.engine.peak import peak_search


class Sleeper:
    """A fake stream: each call sleeps ``service_s`` (``stall_s`` on call number ``stall_call``)
    and records the ids it served and when the stalled call ended."""

    def __init__(self, service_s: float, stall_call: int | None = None, stall_s: float = 0.0):
        self.service_s, self.stall_call, self.stall_s = service_s, stall_call, stall_s
        self.calls: list[list[int]] = []
        self.stalled_ids: list[int] = []
        self.lock = threading.Lock()

    def submit(self, ids) -> None:
        with self.lock:
            number = len(self.calls)
            self.calls.append(list(ids))
        if number == self.stall_call:
            self.stalled_ids = list(ids)
            time.sleep(self.stall_s)
        else:
            time.sleep(self.service_s)


def test_server_offered_twice_its_capacity_is_not_sustained():
    fake = Sleeper(0.005)  # one stream, batch 1: at most 200 requests/s
    result = scenarios.server(lambda s: fake, 1, 1, rate=400.0, requests=150, max_seconds=10)
    assert result.requests == 150 and result.completed == 150
    assert not result.sustained
    assert result.latency_ms_p99 is None and result.latency_ms_p50 is None  # never a figure
    assert result.achieved_rate <= 200.0 * 1.01  # sleeps only overshoot
    assert result.backlog_at_end > 10


def test_server_below_capacity_is_sustained_with_latency_figures():
    fake = Sleeper(0.005)
    result = scenarios.server(lambda s: fake, 1, 1, rate=50.0, requests=50, max_seconds=10)
    assert result.sustained
    assert result.latency_ms_p99 >= result.latency_ms_p50 >= 5.0  # at least one service time
    assert result.latency_ms_p999 >= result.latency_ms_p99
    assert result.mean_batch == 1.0 and result.offered_rate == 50.0
    assert min(result.latencies_ms) >= 5.0


def test_a_stall_shows_in_every_request_that_arrived_during_it():
    stall_s = 0.25
    fake = Sleeper(0.002, stall_call=20, stall_s=stall_s)
    result = scenarios.server(lambda s: fake, 1, 1, rate=100.0, requests=150, max_seconds=10)
    assert result.sustained and fake.stalled_ids
    arrivals, latencies = np.array(result.arrivals_s), np.array(result.latencies_ms)
    stalled = fake.stalled_ids[0]
    stall_end = arrivals[stalled] + latencies[stalled] / 1e3  # that call's completion
    during = (arrivals > stall_end - stall_s) & (arrivals < stall_end)
    assert during.sum() >= 5
    # Counted from the scheduled arrival: each waited out the rest of the stall (one stream, FIFO).
    assert np.all(latencies[during] >= (stall_end - arrivals[during]) * 1e3)
    assert result.latency_ms_p99 >= stall_s * 1e3 / 2


def test_the_batcher_never_forms_a_batch_above_batch_size():
    fakes = [Sleeper(0.003), Sleeper(0.003)]
    result = scenarios.server(
        lambda s: fakes[s], 2, 4, rate=2000.0, max_queue_ms=5.0, requests=200, max_seconds=10
    )
    calls = fakes[0].calls + fakes[1].calls
    assert calls and all(1 <= len(ids) <= 4 for ids in calls)
    assert max(result.batch_sizes) <= 4
    assert sorted(result.batch_sizes) == sorted(len(ids) for ids in calls)
    served = sorted(i for ids in calls for i in ids)
    assert served == list(range(result.requests))  # every request once
    assert result.mean_batch > 1.0  # at this rate the window fills batches


def test_a_lone_request_waits_for_the_queue_window():
    fake = Sleeper(0.001)
    result = scenarios.server(
        lambda s: fake, 1, 8, rate=20.0, max_queue_ms=20.0, requests=20, max_seconds=10
    )
    assert result.sustained
    assert max(result.batch_sizes) < 8
    assert result.latency_ms_p50 >= 20.0  # held for a fuller batch until the window closed


def test_arrivals_are_seeded_poisson():
    a = scenarios.plan_arrivals(100.0, 20000, math.inf, seed=3)
    assert np.array_equal(a, scenarios.plan_arrivals(100.0, 20000, math.inf, seed=3))
    assert not np.array_equal(a, scenarios.plan_arrivals(100.0, 20000, math.inf, seed=4))
    gaps = np.diff(a)
    assert np.mean(gaps) == pytest.approx(0.01, rel=0.05)
    assert np.std(gaps) == pytest.approx(0.01, rel=0.05)  # exponential: sd equals mean
    assert len(scenarios.plan_arrivals(100.0, 20000, 1.0, seed=3)) < 200  # the window cuts


def test_offline_keeps_every_stream_busy_with_full_batches():
    fakes = [Sleeper(0.002), Sleeper(0.002)]
    made: list[int] = []

    def make(stream: int):
        made.append(stream)
        return fakes[stream].submit  # a plain callable is an executor too

    result = scenarios.offline(make, streams=2, batch_size=2, images=40)
    assert made == [0, 1]
    assert all(fake.calls for fake in fakes)
    calls = fakes[0].calls + fakes[1].calls
    assert all(len(ids) == 2 for ids in calls)
    assert sorted(i for ids in calls for i in ids) == list(range(40))
    assert result.images == 40 and len(result.latencies_ms) == 40
    assert min(result.latencies_ms) >= 2.0
    assert result.throughput_ips <= 2 * 2 / 0.002  # two streams of 2 images per >= 2 ms
    assert result.latency_ms_p999 >= result.latency_ms_p50 >= 2.0


def test_offline_stops_on_its_seconds_bound():
    fake = Sleeper(0.002)
    result = scenarios.offline(lambda s: fake, streams=1, batch_size=1, seconds=0.05)
    assert 1 <= result.images == len(fake.calls)


def test_an_error_in_a_call_reaches_the_caller():
    def broken(ids):
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        scenarios.offline(lambda s: broken, streams=2, batch_size=1, images=4)
    with pytest.raises(RuntimeError, match="out of memory"):
        scenarios.server(lambda s: broken, 1, 1, rate=1000.0, requests=5, max_seconds=5)


def _fake_run(capacity: float, p99_per_rate: float = 0.0):
    def run(rate: float):
        ok = rate <= capacity
        return SimpleNamespace(sustained=ok, latency_ms_p99=rate * p99_per_rate if ok else None)

    return run


def test_peak_search_bisects_to_a_known_capacity():
    peak = peak_search(_fake_run(137.0), 50.0, low=10.0, high=500.0, steps=8)
    assert 137.0 - (500.0 - 10.0) / 2**8 <= peak.peak_rate <= 137.0
    assert [t.rate for t in peak.tries[:2]] == [10.0, 500.0] and len(peak.tries) == 10
    assert peak.best.sustained and not peak.ceiling_passed


def test_peak_search_obeys_the_p99_bound_not_only_sustained():
    # sustained up to 300/s, but p99 = rate / 4 ms passes 50 ms only up to 200/s
    peak = peak_search(_fake_run(300.0, 0.25), 50.0, low=10.0, high=400.0, steps=10)
    assert 200.0 - 390.0 / 2**10 <= peak.peak_rate <= 200.0


def test_peak_search_looks_below_a_failing_low_end_down_to_its_floor():
    found = peak_search(_fake_run(3.0), 50.0, low=40.0, high=100.0, steps=4, floor=1.0)
    assert [t.rate for t in found.tries[:3]] == [40.0, 10.0, 2.5]  # quarters until one passes
    assert 2.5 <= found.peak_rate <= 3.0 and all(t.rate < 10.0 for t in found.tries[3:])
    gone = peak_search(_fake_run(0.1), 50.0, low=40.0, high=100.0, floor=1.0)
    assert gone.peak_rate is None and min(t.rate for t in gone.tries) >= 1.0


def test_peak_search_edges():
    none = peak_search(_fake_run(5.0), 50.0, low=10.0, high=100.0)
    assert none.peak_rate is None and len(none.tries) == 1 and not none.tries[0].passed
    ceiling = peak_search(_fake_run(1000.0), 50.0, low=10.0, high=100.0)
    assert ceiling.peak_rate == 100.0 and ceiling.ceiling_passed


def test_peak_search_over_real_server_runs():
    fake = Sleeper(0.005)  # capacity at most 200/s

    def run(rate: float):
        return scenarios.server(lambda s: fake, 1, 1, rate=rate, requests=60, max_seconds=10)

    peak = peak_search(run, 100.0, low=100.0, high=800.0, steps=3)
    assert peak.peak_rate is not None and 100.0 <= peak.peak_rate < 1.3 * 200.0
    assert all(t.result.offered_rate == t.rate for t in peak.tries)


@pytest.mark.parametrize("rate", [0, -1.0, math.nan, math.inf, "100", True])
def test_bad_rates_raise_one_line(rate):
    with pytest.raises(ValueError, match="rate") as err:
        scenarios.server(lambda s: Sleeper(0), 1, 1, rate=rate, requests=1)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("streams", [0, -2, 1.5, math.nan])
def test_bad_streams_raise_one_line(streams):
    with pytest.raises(ValueError, match="streams") as err:
        scenarios.offline(lambda s: Sleeper(0), streams, 1, images=1)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="streams"):
        scenarios.server(lambda s: Sleeper(0), streams, 1, rate=10.0)


@pytest.mark.parametrize("threads", [0, -1, 2.5, math.nan])
def test_bad_threads_raise_one_line(threads):
    with pytest.raises(ValueError, match="threads") as err:
        scenarios.check_threads(threads)
    assert "\n" not in str(err.value)


def test_more_threads_than_cores_needs_oversubscribe():
    assert scenarios.check_threads(1, streams=2, cores=2) == 1
    with pytest.raises(ValueError, match="oversubscribe"):
        scenarios.check_threads(2, streams=2, cores=2)
    assert scenarios.check_threads(2, streams=2, cores=2, oversubscribe=True) == 2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"batch_size": 0},
        {"max_queue_ms": -1.0},
        {"max_queue_ms": math.nan},
        {"requests": 0},
        {"max_seconds": 0},
    ],
)
def test_bad_server_bounds_raise(kwargs):
    args = {"batch_size": 1, "rate": 10.0} | kwargs
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        scenarios.server(lambda s: Sleeper(0), 1, **args)


def test_bad_offline_and_peak_arguments_raise():
    with pytest.raises(ValueError, match="bound"):
        scenarios.offline(lambda s: Sleeper(0), 1, 1)
    with pytest.raises(ValueError, match="low must be below high"):
        peak_search(_fake_run(1.0), 50.0, low=10.0, high=10.0)
    with pytest.raises(ValueError, match="target_p99_ms"):
        peak_search(_fake_run(1.0), math.nan, low=1.0, high=10.0)
