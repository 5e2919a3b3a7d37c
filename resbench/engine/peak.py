"""The server scenario's peak search: the highest offered rate that is sustained with its p99 within a
bound, by bisection over rates, as MLPerf LoadGen's server peak search finds its scenario's
rate. ``peak_search(run_at_rate, target_p99_ms, low, high, steps, floor)`` tries the two ends, then
bisects; every rate tried is kept (``PeakResult.tries``). ``run_at_rate`` is any callable that runs
one server scenario at a rate (``scenarios.server``, or ``serve.server_at`` on a prepared row).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from resbench.engine.scenarios import check_rate, positive_int, positive_number


@dataclass(frozen=True)
class Try:
    """One rate the peak search tried, and whether it met the bound."""

    rate: float
    passed: bool
    result: object  # what run_at_rate returned (a ServerResult)


@dataclass(frozen=True)
class PeakResult:
    """The highest rate tried that was sustained with p99 within the bound (None if low failed)."""

    target_p99_ms: float
    peak_rate: float | None
    best: object | None  # run_at_rate's result at peak_rate
    tries: list[Try]  # in the order tried
    ceiling_passed: bool  # high itself passed: the true peak may lie above the searched range


def meets(result: object, target_p99_ms: float) -> bool:
    """Sustained, with a p99 at most ``target_p99_ms``."""
    p99 = getattr(result, "latency_ms_p99", None)
    return bool(getattr(result, "sustained", False)) and p99 is not None and p99 <= target_p99_ms


def peak_search(
    run_at_rate: Callable[[float], object],
    target_p99_ms: float,
    low: float,
    high: float,
    steps: int = 6,
    floor: float | None = None,
) -> PeakResult:
    """Bisect offered rates in [low, high] for the highest that ``meets`` the p99 bound.

    ``run_at_rate(rate)`` runs one server scenario and returns something with ``sustained`` and
    ``latency_ms_p99`` (a ServerResult). ``low`` and ``high`` are tried first; then ``steps``
    bisections narrow the bracket to (high - low) / 2**steps. With ``floor``, a ``low`` that fails
    is divided by 4 until a rate passes or would fall below ``floor``, and the bisection runs
    between that rate and the last one that failed.
    """
    target_p99_ms = positive_number(target_p99_ms, "target_p99_ms")
    low, high = check_rate(low, "low"), check_rate(high, "high")
    if low >= high:
        raise ValueError(f"low must be below high; got low={low}, high={high}")
    steps = positive_int(steps, "steps")
    tries: list[Try] = []

    def attempt(rate: float) -> Try:
        result = run_at_rate(rate)
        tries.append(Try(rate, meets(result, target_p99_ms), result))
        return tries[-1]

    def done(best: Try | None, ceiling: bool) -> PeakResult:
        return PeakResult(
            target_p99_ms,
            best.rate if best else None,
            best.result if best else None,
            tries,
            ceiling,
        )

    if floor is not None:
        floor = check_rate(floor, "floor")
    best, fail = attempt(low), None
    while not best.passed:
        if floor is None or best.rate / 4 < floor:
            return done(None, False)
        fail = best.rate
        best = attempt(best.rate / 4)
    if fail is None:
        top = attempt(high)
        if top.passed:
            return done(top, True)
        fail = high
    for _ in range(steps):
        mid = attempt((best.rate + fail) / 2)
        if mid.passed:
            best = mid
        else:
            fail = mid.rate
    return done(best, False)
