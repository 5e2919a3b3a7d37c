"""Config -> Result: prepare one model for one setting, time it, count it.

``measure(Config("resnet50", 32, device="cuda", precision="bf16"))`` returns a flat ``Result`` with every
Config field plus latency percentiles, throughput, FLOPs, MFU and peak memory. Failure is data: an
out-of-memory error becomes status "oom", any other runtime error status "error"; only bad input
(unknown model, batch size 0, a device that is not there) raises ``ValueError``, before any work.

A Config is measured over ``repeats`` independent preparations inside this process (a fresh
model, inputs and warm-up each; ``resbench/engine/preparation.py`` builds them): the Result's
latency is the median of their medians, ``repeat_spread`` says how far apart they were, and the
percentiles pool every sample. Fresh processes are the sweep's forks (``resbench/sweep/forks.py``),
which combine such Results. Peak memory and the CPU allocator are explained in
``resbench/engine/devices.py``.
"""

from __future__ import annotations

import datetime as _dt
import functools
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from resbench import settings
from resbench.datamodel import (
    Config,
    Result,
    missing_package,
    validate_config,
)
from resbench.engine import backends, evaluate, flops, power, probes, serve, timing
from resbench.engine.devices import (
    PeakMemory,
    device_name,
    free_memory,
    is_oom,
    steady_allocator,
)
from resbench.engine.preparation import (  # noqa: F401 (users import prepare from here)
    TRAIN_LR,
    NonFiniteOutput,
    Prepared,
    check_faithful,
    load_runtime,
    prepare,
    unfaithful,
)
from resbench.weights import Weights
from resbench.weights import read as read_weights

# the least cap on warm-up after the first call: ample for a GPU's thousands of calls; on a CPU a
# 1 s step still gets two warm calls (the median of the measured ones shrugs off a slow first)
MIN_WARMUP_CAP_S = 1.0
# fault injection for scripts/aa_check.py's power check: a known, real slowdown of every step
SLOWDOWN_ENV = "RESBENCH_INJECT_SLOWDOWN"


@dataclass
class _Run:
    """What one preparation of a Config yields."""

    samples: timing.Samples
    first_s: float
    warm_s: float
    peak_mb: float
    memory_method: str | None
    foreign_cpu: float
    flags: dict
    prepare_s: float
    agreement: dict
    notes: dict
    energy: power.Reading
    serving: dict | None = None  # an offline or server row's figures (serve.run)


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def slowed(step: Callable[[], object], device: torch.device) -> Callable[[], object]:
    """``step``, or with ``RESBENCH_INJECT_SLOWDOWN=F`` in the environment (workers inherit it) a
    step that sleeps F x its own duration after each call (synchronised on a GPU, so the duration
    is the device's): F = 0.25 makes every call 25% slower, a known change for the A/A check."""
    text = os.environ.get(SLOWDOWN_ENV, "").strip()
    try:
        factor = float(text) if text else 0.0
    except ValueError:
        factor = math.nan
    if not math.isfinite(factor) or factor < 0:  # every row an error that names it
        raise ValueError(f"{SLOWDOWN_ENV}={text!r}: give a factor of 0 or more, e.g. 0.25")
    if factor == 0:
        return step

    def slow_step():
        t0 = time.perf_counter()
        out = step()
        timing.synchronize(device)
        time.sleep(factor * (time.perf_counter() - t0))
        return out

    return slow_step


def _measure_once(
    config: Config,
    device: torch.device,
    budget_s: float,
    max_warmup_s: float,
    weights: str | Weights | None = None,
    agree: bool = False,
    allow_emulated: bool = False,
    evaluation: evaluate.Spec | None = None,
    score: bool = False,
) -> _Run:
    """Prepare ``config`` afresh, warm it up and sample it, then (``score``) score it on the
    labelled images; exceptions propagate."""
    load_runtime(config, device)  # before the baseline: no row carries the runtime's start-up
    memory = PeakMemory(device)
    with prepare(
        config,
        reference=agree,
        weights=weights,
        allow_emulated=allow_emulated,
        evaluation=evaluation,
    ) as prepared:
        flags = {
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            "tf32_cudnn": torch.backends.cudnn.allow_tf32,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
        }
        if device.type != "cuda":
            flags = {k: None for k in flags}
        # the first call compiles (torch.compile) or initialises lazily (cuDNN, oneDNN)
        step = slowed(prepared.step, device)
        t0 = time.perf_counter()
        step()
        timing.synchronize(device)
        first_s = time.perf_counter() - t0
        warm, warm_s = timing.warmup(step, device, max_warmup_s)
        memory.start()
        serving = None
        with power.Meter(device) as meter, timing.ForeignCpu() as foreign:
            if config.scenario == settings.DEFAULT_SCENARIO:
                samples = timing.autorange(
                    step, device, budget_s, float(warm.samples_ms[-1]), min_iters=3
                )
            else:  # every stream, as its scenario issues calls (resbench/engine/serve.py)
                t0 = time.perf_counter()
                serving = serve.run(prepared, budget_s)
                wall_ms = (time.perf_counter() - t0) * 1e3
                calls = serving["iterations"]
                samples = timing.Samples(serving["samples_ms"], [wall_ms], [wall_ms], [calls])
            memory.sample()
        peak_mb = memory.peak_mb()
        out = prepared.output()  # after the timed region: a NaN or Inf fails the row
        agreement = prepared.agreement(out) if agree else {}
        if score and prepared.scoring is not None:  # outside every timed figure (eval_s)
            path = getattr(weights, "path", weights)
            key = (config.model, path, config.image_size, config.batch_size, str(device))
            agreement |= evaluate.score(prepared, prepared.scoring, key)
    return _Run(
        samples, first_s, warm_s, peak_mb, memory.method, foreign.cores, flags,
        prepared.prepare_s, agreement, prepared.notes, meter.reading, serving,
    )  # fmt: skip


def measure(
    config: Config,
    budget_s: float = 2.0,
    *,
    max_warmup_s: float | None = None,
    peak: bool | float = True,
    repeats: int = 1,
    wait_quiet_s: float = 0.0,
    weights: str | None = None,
    allow_emulated: bool = False,
    evaluation: dict | None = None,
    score: bool = True,
    peak_probe: str | None = None,
) -> Result:
    """Measure one Config: warm up until settled, then sample until the median is known to ~1%.

    Args:
        budget_s: time for the measured region, shared by the repeats (at least 3 iterations each).
        max_warmup_s: cap on warm-up after the first call; default max(1 s, 2 x budget per
            preparation): the blocks stop early once two agree within 5%.
        peak: True to measure the device's peak (``probes.measure_peak``, cached per process) for
            MFU, a number to use that peak (TFLOP/s) as it is, False for no MFU.
        repeats: independent preparations; the Result's median is the median of their medians.
        wait_quiet_s: before each preparation, wait up to this long for other processes to leave
            the CPUs idle (timing.wait_quiet); 0 to start at once.
        weights: the path of a torchvision state dict or trainer checkpoint to load (read once),
            so agreement, calibration and accuracy see real weights.
        allow_emulated: measure a precision the device only emulates (marked "-emulated" in
            effective_precision) instead of skipping it.
        evaluation: an ``evaluate.Spec`` as a dict (labelled images): an inference row is then
            scored on them after its first preparation's timed region, and int8 calibrates on
            them (``config.calibration_data``).
        score: False skips the agreement with fp32 eager and the scoring on labelled images (a
            sweep's later forks: the first fork's are the Config's); int8 still calibrates.
        peak_probe: what gave a ``peak`` that is a number (the Result's ``peak_probe``), e.g. the
            name a sweep's earlier Result recorded.
    """
    device = validate_config(config)
    spec = evaluate.Spec(**evaluation) if evaluation is not None else None
    missing = missing_package(config)
    if (
        missing is not None
    ):  # an optional runtime: the grid goes on, and the row says what to install
        return Result.for_config(config, status="skipped", error=missing, timestamp=utc_now())
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1; got {repeats}")
    refused = unfaithful(device, config)
    if refused is not None and (allow_emulated is False or not refused[1].endswith("-emulated")):
        why, would = refused  # said before any export or compilation
        if would.endswith("-emulated"):
            why += " (--allow-emulated measures it anyway)"
        return Result.for_config(
            config, status="skipped", error=why, effective_precision=would, timestamp=utc_now()
        )
    per_repeat_s = budget_s / repeats
    max_warmup_s = max(MIN_WARMUP_CAP_S, 2 * per_repeat_s) if max_warmup_s is None else max_warmup_s
    loaded = read_weights(weights) if weights is not None else None  # read once, not per repeat
    shape = tuple(sorted(loaded.overrides().items())) if loaded is not None else ()
    count = flops.count_flops(config.model, config.image_size, config.mode, shape)
    forward = flops.count_flops(config.model, config.image_size, "inference", shape)
    common = {
        "params": flops.count_params(config.model, shape),
        "gflops_per_image": forward.gflops,
        "gflops_per_step": count.gflops * config.batch_size,
        "effective_batch_size": config.batch_size,
        "device_name": device_name(device),
        "allocator": steady_allocator(),
        "weights": weights,
    }
    runs: list[_Run] = []
    waited, quiet = 0.0, None
    try:
        for _ in range(repeats):
            if wait_quiet_s > 0:
                w, q = timing.wait_quiet(wait_quiet_s)
                waited, quiet = waited + w, q if quiet is None else quiet and q
            agree = score and not config.is_baseline and config.mode == "inference" and not runs
            runs.append(
                _measure_once(
                    config,
                    device,
                    per_repeat_s,
                    max_warmup_s,
                    loaded,
                    agree,
                    allow_emulated,
                    spec,
                    score=score and not runs,
                )
            )
    except backends.Unfaithful as exc:  # what ran is not what the label says: skipped, with why
        free_memory(device)
        return Result.for_config(
            config,
            status="skipped",
            error=str(exc),
            effective_precision=exc.effective,
            timestamp=utc_now(),
            **common,
        )
    except Exception as exc:  # failure is data: the caller's other Results must survive
        # an OOM must not leave its tensors (or a fragmented cache) behind
        free_memory(device)
        status = "oom" if is_oom(exc) else "error"
        return Result.for_config(
            config,
            status=status,
            error=f"{type(exc).__name__}: {exc}".strip()[:2000],
            timestamp=utc_now(),
            **common,
        )
    wait = {"quiet_wait_s": waited, "quiet": quiet} if wait_quiet_s > 0 else {}
    return _result(config, device, runs, peak, common | wait, peak_probe)


def _result(
    config: Config,
    device: torch.device,
    runs: list[_Run],
    peak,
    common: dict,
    peak_probe: str | None = None,
) -> Result:
    """One Result from the runs of every repeat; ``peak``/``peak_probe`` as measure() takes them."""
    if runs[0].serving is not None:
        return _serving_result(config, device, runs, peak, common, peak_probe)
    samples = [x for run in runs for x in run.samples.samples_ms]
    s = timing.stats(samples)
    medians = [timing.stats(run.samples.samples_ms).median for run in runs]
    median = statistics.median(medians)
    spread = timing.spread(medians)
    achieved = common["gflops_per_step"] / (median / 1e3) / 1e3
    peak_tflops, peak_probe = _peak(config, device, peak, peak_probe)
    return Result.for_config(
        config,
        latency_ms_median=median,
        latency_ms_p10=s.p10,
        latency_ms_p90=s.p90,
        latency_ms_p99=s.p99,
        latency_ms_iqr=s.iqr,
        iterations=len(samples),
        throughput_ips=config.batch_size / (median / 1e3),
        tflops_achieved=achieved,
        peak_tflops=peak_tflops,
        peak_probe=peak_probe,
        **probes.mfu_fields(achieved, peak_tflops),
        **_common_fields(config, runs, len(samples) * config.batch_size),
        noisy=s.noisy or spread > timing.NOISY_IQR_FRACTION,
        repeat_medians_ms=medians,
        repeat_spread=spread,
        samples_ms=samples,
        **common,
    )


def _peak(config: Config, device: torch.device, peak, peak_probe: str | None) -> tuple:
    """(peak TFLOP/s, the probe that gave it) for MFU, as measure() takes ``peak``; (None, None)
    for no MFU."""
    if settings.PRECISIONS[config.precision].probe is None:
        return None, None  # no matmul probe for this precision: no MFU
    if peak is True:
        probed = probes.measure_peak(device, config.precision)
        return probed.tflops, probed.probe
    if peak:
        return float(peak), peak_probe or "given to measure()"
    return None, None


def _common_fields(config: Config, runs: list[_Run], images: int) -> dict:
    """What a Result takes from its runs whatever the scenario: memory, the first preparation's
    notes and agreement, warm-up and measured times, load, energy over ``images``."""
    first = runs[0]
    return dict(
        peak_memory_mb=max(run.peak_mb for run in runs),
        peak_memory_method=first.memory_method,
        compile_time_s=first.first_s if config.backend == "compile" else 0.0,
        prepare_s=first.prepare_s,
        **first.agreement,
        **first.notes,
        warmup_s=sum(run.first_s + run.warm_s for run in runs),
        measure_s=sum(run.samples.wall_s for run in runs),
        host_ms_per_iter=statistics.median(run.samples.host_ms_per_iter() for run in runs),
        issue_ms_per_iter=statistics.median(run.samples.issue_ms_per_iter() for run in runs),
        foreign_cpu=statistics.fmean(run.foreign_cpu for run in runs),
        repeats=len(runs),
        **power.fields(power.combine([run.energy for run in runs]), images),
        timestamp=utc_now(),
        **first.flags,
    )


def _serving_result(
    config: Config,
    device: torch.device,
    runs: list[_Run],
    peak,
    common: dict,
    peak_probe: str | None = None,
) -> Result:
    """One Result of an offline or server Config's runs (serve.pool combines the repeats):
    per-request latencies, throughput as served, MFU on the images served."""
    figures = functools.reduce(serve.pool, [run.serving for run in runs])
    medians = [run.serving["latency_ms_median"] for run in runs]
    medians = [m for m in medians if m is not None]
    achieved = serve.tflops_served(common["gflops_per_image"], figures.get("throughput_ips"))
    peak_tflops, peak_probe = _peak(config, device, peak, peak_probe)
    served = sum(run.serving.get("requests") or 0 for run in runs)
    return Result.for_config(
        config,
        **figures,
        tflops_achieved=achieved,
        peak_tflops=peak_tflops,
        peak_probe=peak_probe,
        **probes.mfu_fields(achieved, peak_tflops),
        **_common_fields(config, runs, served),
        noisy=len(medians) > 1 and timing.spread(medians) > timing.NOISY_IQR_FRACTION,
        repeat_medians_ms=medians,
        repeat_spread=timing.spread(medians) if medians else None,
        **common,
    )
