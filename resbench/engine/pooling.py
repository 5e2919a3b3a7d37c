"""Several processes' Results of one Config as one: the sweep's forks (``--forks N``).

``combine(previous_ok, new)`` pools an ok Result of forks 0..k-1 (or None) with the ok fork k.
Each family of fields is pooled by the module that measures it: the timing statistics and the
fork record (``timing``; an offline or server row's figures in ``serve``), the time spent and the
load (``timing``), the MFU against the peak (``probes``), peak memory (``devices``), energy and
clocks (``power``). What only the first fork measures is the first fork's (``FIRST_FORK_FIELDS``),
and a field of no family is the new fork's (its timestamp, its environment).
"""

from __future__ import annotations

import dataclasses

from resbench import settings
from resbench.datamodel import Result, fork_groups, fork_medians
from resbench.engine import devices, power, probes, serve, timing

# what only the first fork measures, as the sweep calls measure(score=False) in the later ones
# (agreement with fp32 eager, accuracy on labelled images), or what is the Config's first
# preparation in a fresh process (the int8 calibration, its first call, the backend's preparation).
# They come from preparation, evaluate, runtimes and measure alike; their one rule is the forks'.
FIRST_FORK_FIELDS = ("max_abs_diff", "top1_agreement", "agreement_inputs", "calibration",
                     "calibration_method", "calibration_images", "top1_accuracy", "top1_ties",
                     "top5_accuracy", "accuracy_drop", "flips_lost", "flips_gained", "accuracy_drop_p", "accuracy_drop_ci",
                     "kl_divergence", "logit_rel_error", "eval_images", "eval_data", "eval_s",
                     "compile_time_s", "prepare_s")  # fmt: skip


def combine(previous_ok: Result | None, new: Result) -> Result:
    """One Result of the forks of ``previous_ok`` (an ok Result of forks 0..k-1, or None) and the
    ok fork ``new``: its median is the median of the fork medians, the percentiles those of every
    fork's samples with each fork weighted equally (``timing.fork_stats``), so they describe what
    the median does; iterations and times add up, peak memory is the largest, energy adds up; what
    only fork 0 measures (accuracy, agreement, the first call) is ``previous_ok``'s."""
    if previous_ok is None:
        return dataclasses.replace(new, **timing.one_fork(new))
    first = previous_ok
    if new.scenario == settings.DEFAULT_SCENARIO:
        pooled = timing.pool_forks(first, new, fork_medians(first), fork_groups(first))
        median = pooled["latency_ms_median"]
        achieved = new.gflops_per_step / (median / 1e3) / 1e3 if new.gflops_per_step else None
        images = pooled["iterations"] * new.batch_size
    else:
        pooled = serve.pool_forks(first, new, fork_medians(first))
        achieved = serve.tflops_served(new.gflops_per_image, pooled["throughput_ips"])
        images = pooled["requests"] or 0
    return dataclasses.replace(  # a field pooled by two families is a TypeError here
        new,
        **pooled,
        **timing.pool_clock(first, new),
        **{name: getattr(first, name) for name in FIRST_FORK_FIELDS},
        **probes.pool_forks(first, new, achieved),
        **devices.pool_forks(first, new),
        **power.pool_forks(first, new, images),
    )
