"""How long a sweep will take: the static estimate printed at its start, and the progress bar.

``estimate_s`` adds up, before anything runs, what each Config costs in each fork: its
preparations (a model build, a backend's export or compilation), its warm-up and its share of the
budget, with the few iterations that a slow Config runs past its budget (measure() takes at least
3 per preparation, and warms up for about 4 more). How slow a Config is comes from its FLOPs
(``flops.count_flops``, which measure() counts anyway) at a rough rate per device. Then the
once-per-run costs: a worker's start per fork, each (device, precision)'s peak probe, the report.

``Progress`` is a tqdm bar whose unit is estimated seconds: each finished Config advances it by its
own estimate, and tqdm's rate (estimated seconds done per real second, averaged over the whole run)
turns the rest into the ETA. So the ETA it shows is what was measured so far in this run, scaled
to the remaining Configs' estimates: a host twice as slow as the constants below shows an ETA
twice as long after the first Configs.

How the constants were calibrated (2 cores, AMD EPYC, KVM; read from recorded runs, not timed anew):
the quick preset's results.jsonl (68 Configs, one process, 2 repeats, budget 1 s; 292 s from
start to report) gives per row ``warmup_s``, ``measure_s`` and a timestamp; the gap between
consecutive timestamps less warm-up and measuring is the rest of a row (builds, FLOP counting,
agreement, probes). Three isolated one-repeat sweeps of 12 Configs (31-38 s each) give a worker's
start and a row's cost in a worker; results/backends-cpu (64 rows) gives the backends' preparation
(``prepare_s``, and ``compile_time_s`` for torch.compile's first call); results/gpu-h100-cuda's
sweep the GPU rate and first calls. Each constant says which numbers it came from. With them the estimate of
the quick preset's run is 285 s against its 292 s; of each 12-Config sweep 33 s against 31.5-38 s;
of results/backends-cpu's rows 830 s against the 804 s between their timestamps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from tqdm import tqdm

from resbench.datamodel import missing_package
from resbench.engine import flops, serve
from resbench.engine.measure import MIN_WARMUP_CAP_S, Config, Result, unfaithful
from resbench.settings import DEFAULT_SCENARIO, PRECISIONS

# FLOP/s a Config's step runs at, to know how long its iterations take. CPU, per torch thread: the
# quick preset's fp32 eager rows of 3 GFLOP or more per step ran at 88-145 GFLOP/s on 2 threads
# (median ~120; bf16 faster, small CIFAR models at batch 1 slower, but there the budget decides).
# Other devices: the H100 sweep's fp32 rows ran at 18-37 TFLOP/s, tf32 and bf16 at 40-160.
CPU_GFLOPS_PER_THREAD = 60.0
OTHER_GFLOPS = 25_000.0
# how much faster than fp32 eager a step runs (results/backends-cpu, 2 cores with bf16 and VNNI
# units): ONNX Runtime and OpenVINO 1.45-1.5x at batch 8-32; int8 3.5x more; bf16 1.5x
SPEEDUP = {"onnxruntime": 1.5, "openvino": 1.5, "int8": 3.5, "bf16": 1.5}
# warm-up per preparation: the first call and blocks until two agree: 0.15 s for a fast Config
# (two 50 ms blocks and the first call) plus ~4.5 iterations (quick preset: resnet18 b8 train 5.2,
# resnet50 b8 4.3, small_resnet56 b128 train 4.3; the sweeps' resnet18 b8 4.2-5)
WARMUP_FIXED_S, WARMUP_ITERS = 0.15, 4.5
# a first call's extra on a GPU (cuDNN's autotuning, the context): the H100 rows' median warm-up
FIRST_CALL_S = {"cpu": 0.0, "other": 1.5}
MIN_ITERS = 3  # measure()'s least iterations per preparation (timing.autorange's min_iters)
# one model build per preparation: 0.15 s plus 15 ns a parameter (quick preset: resnet152 2.7 s and
# wide_resnet50_2 2.3 s a row for two builds, small models 0.3-0.7 s); the row's own bookkeeping
# (FLOP count, Result, the log, a worker's pipe) ~0.1 s (the sweeps' rows: 0.28-0.36 s for one build)
BUILD_S, BUILD_S_PER_PARAM, ROW_S = 0.15, 1.5e-8, 0.1
# a backend's preparation per repeat on a 2-core CPU (results/backends-cpu): torch.compile's first
# call 9-19 s (mean 14), AOTInductor's export and compilation 13-20 s (17), ONNX Runtime's export
# and session 2-6 s (4), OpenVINO's 2-4 s (3); int8 adds its calibration and quantisation (ONNX
# Runtime 4-16 s, OpenVINO 4-18 s: ~5 s more than fp32 on average)
PREPARE_S = {"compile": 14.0, "aotinductor": 17.0, "onnxruntime": 4.0, "openvino": 3.0}
QUANTISE_S = 5.0
# the matmul peak, once per device and precision in a run (later workers are given it): the quick
# preset's first row took ~4.5 s more than its kind, its first bf16 row ~1.6 s more
PROBE_S = 4.0
# a fresh worker: Python, torch and resbench imported in a spawned process (the isolated sweeps'
# first rows took 7-12 s, the in-process quick preset's 5.6 s with its probe)
WORKER_START_S = 3.0
# after the last Config: the bandwidth probe, summary.md, plots and report.html (quick preset,
# 68 rows: ~16 s; the 12-row sweeps: 5-8 s)
FINISH_S, FINISH_S_PER_ROW = 4.0, 0.17


def will_skip(config: Config, allow_emulated: bool = False) -> bool:
    """Whether measure() will skip this Config at once: its label would be false here, or its
    runtime is not installed."""
    if missing_package(config) is not None:
        return True
    try:
        refused = unfaithful(torch.device(config.device), config)
    except (RuntimeError, AssertionError):  # a device that cannot be asked here: it will run
        return False
    return refused is not None and not (allow_emulated and refused[1].endswith("-emulated"))


def step_s(config: Config) -> float:
    """A rough time for one step of ``config``, from its FLOPs (0 where they cannot be counted)."""
    try:
        # the arguments as measure() gives them, so that in one process the count is made once
        gflops = flops.count_flops(config.model, config.image_size, config.mode, ()).gflops
    except (KeyError, ValueError, RuntimeError):
        return 0.0
    if torch.device(config.device).type == "cpu":
        rate = CPU_GFLOPS_PER_THREAD * torch.get_num_threads()
    else:
        rate = OTHER_GFLOPS
    rate *= SPEEDUP.get(config.backend, 1.0) * SPEEDUP.get(config.precision, 1.0)
    return gflops * config.batch_size / rate


def _build_s(config: Config) -> float:
    try:
        params = flops.count_params(config.model, ())
    except (KeyError, ValueError, RuntimeError):
        params = 0
    return BUILD_S + BUILD_S_PER_PARAM * params


def fork_s(
    config: Config,
    budget_s: float,
    repeats: int = 1,
    forks: int = 1,
    allow_emulated: bool = False,
) -> float:
    """One fork of one Config, in seconds: its ``repeats`` preparations, each built, prepared by its
    backend, warmed up and measured for its share of the budget (``budget_s`` is the Config's,
    shared by all its forks and repeats), or longer where 3 iterations take longer; 0 for a
    Config that will be skipped at once. Fork 0's agreement check (an eager reference) is spread
    over the forks."""
    if will_skip(config, allow_emulated):
        return 0.0
    step, build = step_s(config), _build_s(config)
    share = budget_s / (max(forks, 1) * max(repeats, 1))
    first = FIRST_CALL_S["cpu" if torch.device(config.device).type == "cpu" else "other"]
    prepare = PREPARE_S.get(config.backend, 0.0)
    if PRECISIONS[config.precision].quantised:
        prepare += QUANTISE_S
    # warm-up stops at measure()'s cap, overrun by the block in flight and the one before it
    cap = max(MIN_WARMUP_CAP_S, 2 * share)
    one = build + prepare + first + WARMUP_FIXED_S + min(WARMUP_ITERS * step, cap + 2 * step)
    if config.scenario == DEFAULT_SCENARIO:
        one += max(share, MIN_ITERS * step)
    else:  # its scenario's runs (resbench/engine/serve.py), a peak search's every rate
        one += serve.expected_s(config, share, step)
    agree = not config.is_baseline and config.mode == "inference"
    reference = (build + step) / max(forks, 1) if agree else 0.0
    return ROW_S + repeats * one + reference


def startup_s(
    configs: Sequence[Config], isolate: bool, forks: int = 1, allow_emulated: bool = False
) -> float:
    """The run's costs before and between its Configs that belong to no one Config: a worker's
    start per fork (isolated) and each (device, precision)'s peak probe, once."""
    run = [c for c in configs if not will_skip(c, allow_emulated)]
    start = WORKER_START_S * max(forks, 1) if isolate and run else 0.0
    probes = {(c.device, c.precision) for c in run if PRECISIONS[c.precision].probe is not None}
    return start + PROBE_S * len(probes)


def finish_s(configs: Sequence[Config]) -> float:
    """After the last Config: the bandwidth probe and the report of every row."""
    return FINISH_S + FINISH_S_PER_ROW * len(configs) if configs else 0.0


def estimate_s(
    configs: Sequence[Config],
    budget_s: float,
    isolate: bool,
    repeats: int = 1,
    forks: int = 1,
    allow_emulated: bool = False,
) -> float:
    """The run's expected length in seconds, before anything is measured: every fork of every
    Config (``fork_s``), the run's start-up (``startup_s``) and its report (``finish_s``)."""
    per = sum(fork_s(c, budget_s, repeats, forks, allow_emulated) for c in configs)
    start = startup_s(configs, isolate, forks, allow_emulated)
    return max(forks, 1) * per + start + finish_s(configs)


def _ms(seconds: float) -> int:
    return max(0, round(1000 * seconds))


def label(config: Config) -> str:
    return f"{config.model} b{config.batch_size} {config.mode} {config.setting}"


class Progress:
    """A progress bar over Configs whose unit is estimated seconds.

    ``configs``: every measurement the bar will see, a Config once for each pass (fork) that
    measures it; ``estimate_of(config)``: its seconds (``fork_s``). ``finished`` advances the bar
    by that estimate (counted in whole milliseconds); tqdm's average rate over the run (``smoothing=0``) then corrects the ETA by
    what the finished Configs really took. ``fixed`` (seconds) counts costs outside any Config (a
    worker's start, a probe): the first ``finished`` spends it.
    """

    def __init__(
        self,
        configs: Sequence[Config],
        estimate_of: Callable[[Config], float],
        disable: bool = False,
        fixed: float = 0.0,
    ) -> None:
        self.estimate_of = estimate_of
        self._fixed = fixed
        total = sum(_ms(estimate_of(c)) for c in configs) + _ms(fixed)
        self.bar = tqdm(  # whole milliseconds, so that the steps add up to the total exactly
            total=total,
            desc="sweep",
            unit="ms",
            disable=disable,
            dynamic_ncols=True,
            smoothing=0,  # the ETA from the whole run's rate, not the last Config's
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}{postfix}",
        )

    def started(self, config: Config, prefix: str = "") -> None:
        self.bar.set_postfix_str(prefix + label(config))

    def drop(self, config: Config, n: int) -> None:
        """``n`` measurements of ``config`` the bar counted will not happen (it stopped early)."""
        self.bar.total -= n * _ms(self.estimate_of(config))
        self.bar.refresh()

    def finished(self, config: Config, result: Result | None = None) -> None:
        """``config`` is done (whatever ``result`` says: a skipped or failed Config is done too)."""
        step = _ms(self.estimate_of(config)) + _ms(self._fixed)
        self._fixed = 0.0
        self.bar.update(min(step, self.bar.total - self.bar.n))

    def write(self, line: str) -> None:
        """A line above the bar (or printed, when the bar is off)."""
        if self.bar.disable:
            print(line, flush=True)
        else:
            self.bar.write(line)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
