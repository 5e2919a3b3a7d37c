"""ResNet inference and training steps under pytest-benchmark.

    pytest benchmarks --benchmark-autosave             # CPU defaults, ~2 minutes
    pytest benchmarks --rb-device cuda --rb-all --benchmark-autosave

Each benchmark uses the same preparation as ``resbench.engine.measure`` (``prepare``), warms up
until the timings settle (compilation and cuDNN autotuning stay out of the statistics), and on a GPU
synchronises inside the timed call, so the recorded time is the device's, not the launch's.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from resbench.engine import flops, timing
from resbench.engine.backends import Unfaithful
from resbench.engine.devices import PeakMemory, device_name
from resbench.engine.measure import Config, load_runtime, prepare
from resbench.weights import Weights

ROUND_BUDGET_S = 1.0  # time spent in timed rounds per benchmark (at least MIN_ROUNDS rounds)
MIN_ROUNDS = 5


def run_benchmark(benchmark, config: Config, weights: Weights | None = None) -> None:
    import torch

    device = torch.device(config.device)
    load_runtime(config, device)  # the runtime's start-up in no benchmark's memory or first call
    memory = PeakMemory(device)
    try:
        with prepare(config, weights=weights) as prepared:
            # --benchmark-disable: one call as a smoke test
            if getattr(benchmark, "disabled", False):
                benchmark(prepared.step)
                return
            warm, _ = timing.warmup(prepared.step, device, max_s=max(2.0, 2 * ROUND_BUDGET_S))
            per_iter_s = float(warm.samples_ms[-1]) / 1e3

            def timed():
                prepared.step()
                timing.synchronize(device)  # the device's time, not the launch's

            rounds = max(MIN_ROUNDS, min(1000, math.ceil(ROUND_BUDGET_S / max(per_iter_s, 1e-6))))
            memory.start()
            benchmark.pedantic(timed, rounds=rounds, iterations=1, warmup_rounds=1)
            memory.sample()
            peak_mb = memory.peak_mb()
            effective = prepared.notes.get("effective_precision")
    except Unfaithful as exc:  # the runtime computed another precision than the label's
        pytest.skip(str(exc))
    forward = flops.count_flops(config.model, config.image_size)
    step = flops.count_flops(config.model, config.image_size, config.mode)
    info = {
        **{k: getattr(config, k) for k in Config.__dataclass_fields__},
        "setting": config.setting,
        "params": flops.count_params(config.model),
        "gflops_per_image": forward.gflops,
        "gflops_per_step": step.gflops * config.batch_size,
        "peak_memory_mb": peak_mb,
        "peak_memory_method": memory.method,
        "device_name": device_name(device),
        "effective_precision": effective,
        "weights": weights.path if weights is not None else None,
    }
    stats = getattr(benchmark, "stats", None)
    if stats is not None and stats.stats.median > 0:  # absent under --benchmark-disable
        info["throughput_ips"] = config.batch_size / stats.stats.median
        p10, p90, p99 = np.percentile(np.asarray(stats.stats.data) * 1e3, [10, 90, 99])
        info.update(latency_ms_p10=p10, latency_ms_p90=p90, latency_ms_p99=p99)
    benchmark.extra_info.update(info)


def test_inference(benchmark, rb_config, rb_weights):
    run_benchmark(benchmark, rb_config, rb_weights)


def test_train(benchmark, rb_config, rb_weights):
    run_benchmark(benchmark, rb_config, rb_weights)
