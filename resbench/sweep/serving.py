"""The grid's serving axes: each Config in each --scenario, with each --streams, --threads and
--rate, and the peak search of --target-p99-ms; the flags' mistakes as one line each."""

from __future__ import annotations

import dataclasses
import itertools
import math

from resbench import cli, settings
from resbench.engine import scenarios
from resbench.engine.measure import Config
from resbench.settings import SCENARIOS


def serving(configs: list[Config], args) -> list[Config]:
    """Each Config in each scenario (--scenario) with each --streams and --threads, a server one
    at each --rate and, with --target-p99-ms, searching; a UsageError (one line) for a knob that
    means nothing in the scenarios asked for, or streams x threads beyond the cores without
    --oversubscribe."""
    names = cli.parse_choices(args.scenario or settings.DEFAULT_SCENARIO, "--scenario", SCENARIOS)
    streams = cli.parse_positive_ints(args.streams or "1", "--streams")
    threads = cli.parse_positive_ints(args.threads, "--threads") if args.threads else [None]
    rates = cli.parse_positive_floats(args.rate, "--rate") if args.rate else []
    queue_ms = 0.0 if args.max_queue_ms is None else args.max_queue_ms
    target = args.target_p99_ms
    if queue_ms < 0 or not math.isfinite(queue_ms):
        raise cli.UsageError(
            f"--max-queue-ms must be a finite number of at least 0; got {queue_ms}"
        )
    if target is not None:
        cli.positive(target, "--target-p99-ms")
    server = "server" in names
    if server and not rates and target is None:
        raise cli.UsageError(
            "--scenario server needs --rate (requests per second) or --target-p99-ms"
        )
    if not server and (rates or target is not None or args.max_queue_ms is not None):
        given = "--rate" if rates else "--target-p99-ms" if target is not None else "--max-queue-ms"
        raise cli.UsageError(f"{given} is the server scenario's; add server to --scenario")
    if max(streams) > 1 and not any(SCENARIOS[n].streams for n in names):
        raise cli.UsageError(
            f"--streams {args.streams}: single-stream runs one stream; add offline or server to "
            "--scenario"
        )
    for s, t in itertools.product(streams, threads):
        try:
            scenarios.check_threads(t or 1, s, oversubscribe=bool(args.oversubscribe))
        except ValueError as exc:
            raise cli.UsageError(f"--streams/--threads: {exc}") from None
    out = []
    for c, name in itertools.product(configs, names):
        knobs = [{}]
        if SCENARIOS[name].rate:
            knobs = [{"rate": r, "max_queue_ms": queue_ms} for r in rates]
            if target is not None:
                knobs.append({"target_p99_ms": target, "max_queue_ms": queue_ms})
        for s, t, knob in itertools.product(
            streams if SCENARIOS[name].streams else [1], threads, knobs
        ):
            out.append(dataclasses.replace(c, scenario=name, streams=s, threads=t, **knob))
    return out
