"""The sweep as real processes: an isolated worker that crashes or hangs, SIGTERM mid-run, and
torchrun ranks merging into one folder. Apart from tests/test_sweep.py so that pytest -n 2
--dist loadfile can run these slow tests beside the rest of the sweep's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from resbench import report
from resbench.engine.measure import Config, Result
from resbench.sweep import isolate

ROOT = Path(__file__).resolve().parent.parent


def _crash(conn):
    os.kill(os.getpid(), signal.SIGSEGV)


def _hang(conn):
    time.sleep(60)


def _fail_then_serve(conn):
    """A worker whose every Config ends in "error"; it must be replaced each time."""
    while (job := conn.recv()) is not None:
        conn.send(Result.for_config(Config(**job[0]), status="error", error="poisoned").to_dict())


def test_isolated_worker_crash_and_hang_become_status_error():
    config = Config("small_resnet20", 1, device="cpu")
    with isolate.Worker(60, target=_crash) as worker:
        crashed = worker.measure(config, 0.1)
    assert crashed.status == "error" and "SIGSEGV" in crashed.error
    with isolate.Worker(1, target=_hang) as worker:  # the hang is 60 s: 1 s is past any reply
        hung = worker.measure(config, 0.1)
    assert hung.status == "error" and "timed out" in hung.error
    with isolate.Worker(60, target=_fail_then_serve) as worker:
        assert [worker.measure(config, 0.1).status for _ in range(2)] == ["error", "error"]
        assert worker.starts == 2  # an error retires the worker: the next Config gets a fresh one


def _sweep_cmd(out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "resbench.sweep", "--device", "cpu", "--models", "small_resnet20",
        "--batch-sizes", "1,2,3,4,5,6", "--budget", "0.05", "--repeats", "1", "--no-progress",
        "--out", str(out), *extra,
    ]  # fmt: skip


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.mark.parametrize("isolate", ["off", "on"])
def test_sigterm_stops_after_writing_and_says_how_to_resume(tmp_path, isolate):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        _sweep_cmd(out, "--isolate", isolate),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    seen = []  # the sweep's children once the first and once the second Result is in
    for done in (1, 2):
        while _lines(out / "results.jsonl") < done and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            time.sleep(0.05)
        seen.append(psutil.Process(proc.pid).children(recursive=True))
    children = seen[-1]
    workers = [c for c in children if "spawn_main" in " ".join(c.cmdline())]
    assert len(workers) == (1 if isolate == "on" else 0)
    # one worker process measured both Configs for real (it is replaced only when it fails)
    assert [c.pid for c in seen[0] if c in workers] == [w.pid for w in workers]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the sweep finished before the signal arrived")
    assert proc.returncode == 130
    # the worker was killed and reaped before the sweep exited; multiprocessing's resource
    # tracker (the other child) leaves on its own once its parent is gone
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
    assert not psutil.wait_procs(children, timeout=30)[1]
    assert "resume with: python -m resbench.sweep --resume --out" in err
    rows = report.read_results(out)
    assert len(rows) >= 2 and all(r.status == "ok" and r.throughput_ips > 0 for r in rows)
    assert (out / "summary.md").exists()


def test_torchrun_two_processes_merge_into_one_folder(tmp_path):
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "resbench.sweep", "--device", "cpu", "--models", "small_resnet20",
        "--batch-sizes", "1,2,3", "--budget", "0.05", "--repeats", "1", "--forks", "2",
        "--no-progress", "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    results = report.read_results(out)
    assert sorted(r.batch_size for r in results) == [1, 2, 3]
    # every rank ran its slice in two passes, each in a fresh worker of its own
    assert all(r.forks == 2 and len(r.fork_medians_ms) == 2 for r in results)
    assert not (out / "parts").exists()
    env = json.loads((out / "env.json").read_text())
    assert (out / "summary.md").exists() and env["world_size"] == 2
    # two CPU ranks on one host time each Config under the other's load: said, and recorded
    said = "each rank is measured under the others' load: 2 torchrun ranks share"
    assert done.stderr.count(said) == 1, done.stderr[-3000:]  # once, by rank 0
    assert env["shared_cores"]["ranks"] == 2 and said in env["shared_cores"]["warning"]
    assert "- Each rank is measured under the others' load" in (out / "summary.md").read_text()
