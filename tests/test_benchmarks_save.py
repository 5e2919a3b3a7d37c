"""`pytest benchmarks --benchmark-autosave` keeps what a later comparison needs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_autosave_keeps_the_raw_timings(tmp_path):
    cmd = [sys.executable, "-m", "pytest", "benchmarks", "-q", "-p", "no:cacheprovider",
           "--rb-device", "cpu", "--rb-models", "small_resnet20", "--rb-batch-sizes", "1",
           "--rb-modes", "inference", "--rb-settings", "fp32", "--benchmark-autosave",
           f"--benchmark-storage=file://{tmp_path}", "--benchmark-min-rounds=3"]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (saved,) = tmp_path.rglob("*.json")
    (bench,) = json.loads(saved.read_text())["benchmarks"]
    assert len(bench["stats"]["data"]) >= 3  # per-round times, not only their summary
