"""Tests that need a CUDA device (skipped without one): run by scripts/gpu_check.sh."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from resbench import data, sweep, train
from resbench.engine import timing
from resbench.engine.devices import PeakMemory
from resbench.engine.measure import Config, measure

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.cuda


def test_cuda_event_samples_match_the_host_clock():
    device = torch.device("cuda")
    cycles = 20_000_000  # a busy-wait kernel of a few milliseconds

    def spin():
        torch.cuda._sleep(cycles)

    timing.time_block(spin, 3, device)
    t0 = time.perf_counter()
    block = timing.time_block(spin, 20, device)
    wall_ms = (time.perf_counter() - t0) * 1e3
    per_iter = sum(block.samples_ms) / 20
    assert per_iter == pytest.approx(wall_ms / 20, rel=0.10)
    assert block.issue_ms_per_iter() < block.host_ms_per_iter()  # the host ran ahead of the GPU


def test_peak_memory_comes_from_the_cuda_allocator():
    device = torch.device("cuda")
    memory = PeakMemory(device)
    memory.start()
    x = torch.empty(256 * 2**20, dtype=torch.uint8, device=device)  # 268 MB
    del x
    assert memory.method == "cuda_max_memory_allocated"
    assert memory.peak_mb() >= 268


def test_train_with_fp16_grad_scaler_on_cuda(tmp_path):
    data.make_synthetic(tmp_path / "d", n_train=512, n_test=128)
    rc = train.main(["--data-dir", str(tmp_path / "d"), "--no-verify", "--device", "cuda", "--model",
                     "small_resnet20", "--precision", "fp16", "--epochs", "1", "--batch-size", "64",
                     "--out", str(tmp_path / "o"), "--no-progress"])  # fmt: skip
    assert rc == 0
    ckpt = torch.load(tmp_path / "o" / train.CHECKPOINT, weights_only=False)
    assert ckpt["scaler"]["scale"] > 0  # the GradScaler's state is checkpointed


def test_isolated_sweep_on_cuda(tmp_path):
    rc = sweep.main(["--device", "cuda", "--models", "small_resnet20", "--batch-sizes", "32",
                     "--precision", "fp32,bf16", "--budget", "0.2", "--no-progress", "--out", str(tmp_path)])  # fmt: skip
    assert rc == 0
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert all(r["peak_memory_method"] == "cuda_max_memory_allocated" for r in rows)


def test_channels_last_bf16_compile_on_cuda():
    r = measure(Config("small_resnet20", 64, device="cuda", precision="bf16", channels_last=True,
                       compile="default"), budget_s=0.3)  # fmt: skip
    assert r.status == "ok", r.error
    assert r.compile_time_s > 0 and r.mfu is not None


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="DDP over nccl needs 2 GPUs")
def test_ddp_nccl_two_gpus(tmp_path):
    data.make_synthetic(tmp_path / "d", n_train=1024, n_test=256)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "resbench.train",
           "--data-dir", str(tmp_path / "d"), "--no-verify", "--device", "cuda", "--model", "small_resnet20",
           "--epochs", "1", "--batch-size", "64", "--out", str(tmp_path / "o"), "--no-progress"]  # fmt: skip
    done = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=dict(os.environ)
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "o" / "env.json").read_text())["world_size"] == 2


@pytest.mark.parametrize("backend", ["eager", "cudagraphs"])
def test_streams_on_cuda_each_run_on_their_own_cuda_stream(backend):
    from resbench.engine import serve
    from resbench.engine.preparation import prepare

    config = Config("small_resnet20", 8, device="cuda", backend=backend, scenario="offline",
                    streams=2, threads=1)  # fmt: skip
    with prepare(config) as p:
        calls = serve.stream_calls(p)
        assert len(calls) == 2
        for call in calls:
            call()  # synchronised on its own stream: the output is ready on return
        first, second = (torch.as_tensor(step()).float().cpu() for step in p.streams)
    assert torch.allclose(first, second, atol=1e-3)
    r = measure(config, budget_s=0.3, peak=False)
    assert r.status == "ok", r.error
    assert r.streams == 2 and r.throughput_ips > 0 and r.latency_ms_p999 >= r.latency_ms_p99


def test_a_server_on_cuda_searches_the_mlperf_bound():
    config = Config("resnet50", 8, device="cuda", precision="bf16", channels_last=True,
                    scenario="server", streams=2, threads=1, target_p99_ms=15.0)  # fmt: skip
    r = measure(config, budget_s=0.5, peak=False)
    assert r.status == "ok", r.error
    assert r.peak_tries and (r.offered_rate is None or r.latency_ms_p99 <= 15.0)
