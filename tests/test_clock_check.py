"""scripts/clock_check.py's report of the spread between processes (its summary, not its runs)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "clock_check.py"


@pytest.fixture(scope="module")
def clock_check():
    spec = importlib.util.spec_from_file_location("clock_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_clock_check_reports_the_spread_between_processes(clock_check):
    # three in-process children whose rounds agree inside each, but not across them
    procs = [
        {"measure_ms": [m, m * 1.01, m * 0.99], "timer_ms": [m], "bare_ms": [m]}
        for m in (3.7, 5.0, 5.5)
    ]
    pairs = [{"sweep_ms": s, "plain_ms": 4.0, "plain_system_malloc_ms": 4.4} for s in (1.4, 2.3)]
    got = clock_check.process_spreads(procs, pairs)
    between = got["between_processes"]
    assert between["measure"]["ms"] == [3.7, 5.0, 5.5]
    assert between["measure"]["spread"] == pytest.approx((5.5 - 3.7) / 5.0)
    assert between["sweep"]["spread"] == pytest.approx((2.3 - 1.4) / 1.85)
    assert between["plain_loop"]["spread"] == 0.0
    assert got["measure_within_one_process"] == pytest.approx(0.02)
    line = clock_check.spread_line(got)
    assert "measure 3.70..5.50 ms (36.0%)" in line and "sweep 1.40..2.30 ms (48.6%)" in line
    assert line.endswith("inside one process, measure()'s rounds: 2.0%")
    one = clock_check.process_spreads(procs[:1], pairs[:1])
    assert one["between_processes"]["sweep"]["spread"] is None  # one process: no spread to show
    assert "sweep 1.40..1.40 ms (-)" in clock_check.spread_line(one)
