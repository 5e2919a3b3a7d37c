from __future__ import annotations

import subprocess
import sys
import time

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
    """A child process that keeps one core busy while the test runs; stopped and reaped after."""
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # let it reach the scheduler before anything is measured
        yield child
    finally:
        child.kill()
        child.wait()
