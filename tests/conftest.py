from __future__ import annotations

import os

# Under pytest-xdist (the README's `pytest -n 2`), each worker runs PyTorch, and every process its
# tests spawn, on one intra-op thread: two workers of two OpenMP threads each on 2 cores would wait
# on threads without a core, many times slower (the load warning's 37x), and time out at random.
# Set before torch is imported, so the workers' default thread count is 1.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"

import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; none is available here")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def busy_cpu():
    """Two child processes that keep two cores busy while the test runs; stopped and reaped after.

    Two, not one: the scheduler shares the cores among threads, and the threads of the pytest
    process (the measured sweep's and whatever earlier tests left) compete with a child as equals:
    a single spinning child kept under a quarter of a core busy in two full CI runs (alone, it
    keeps 0.69 of a core against a 2-thread sweep on 2 cores)."""
    children = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        # until they are spinning, not a fixed wait: a slow start on a busy host left a child idle
        # during the measurement (and the load unseen) once in a full run
        spinning = [psutil.Process(child.pid) for child in children]
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and min(sum(p.cpu_times()[:2]) for p in spinning) < 0.2:
            time.sleep(0.05)
        time.sleep(0.1)
        yield children
    finally:
        for child in children:
            child.kill()
            child.wait()


@pytest.fixture(scope="session")
def benchmark_run(tmp_path_factory):
    """One `pytest benchmarks` run, read by the tests of what it saves: two settings of
    small_resnet20 at batch 2, autosaved (--benchmark-autosave) and written as --benchmark-json.
    Returns (the --benchmark-json file, the autosave storage folder)."""
    root = tmp_path_factory.mktemp("benchmarks")
    out, storage = root / "bench.json", root / "storage"
    cmd = [
        sys.executable, "-m", "pytest", "benchmarks", "-q", "-p", "no:cacheprovider",
        "--rb-models", "small_resnet20", "--rb-batch-sizes", "2", "--rb-modes", "inference",
        "--rb-settings", "fp32,fp32+cl", f"--benchmark-json={out}", "--benchmark-autosave",
        f"--benchmark-storage=file://{storage}", "--benchmark-min-rounds=3",
    ]  # fmt: skip
    # a run of its own, not an xdist worker's: pytest-benchmark times nothing under xdist
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
    done = subprocess.run(
        cmd, cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True,
        timeout=300, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return out, storage
