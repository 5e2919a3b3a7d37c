from __future__ import annotations

import json

import numpy as np
import pytest

from resbench import report
from resbench.measure import Config, Result


def result(model="resnet18", batch=8, precision="fp32", ms=10.0, spread=0.01, seed=0, **kw):
    rng = np.random.default_rng(seed)
    samples = list(ms * (1 + spread * rng.standard_normal(40)))
    config = Config(model, batch, device="cpu", precision=precision, **kw)
    return Result.for_config(
        config,
        latency_ms_median=float(np.median(samples)),
        latency_ms_p99=float(np.percentile(samples, 99)),
        latency_ms_iqr=float(np.subtract(*np.percentile(samples, [75, 25]))),
        throughput_ips=batch / float(np.median(samples)) * 1e3,
        gflops_per_image=3.6,
        gflops_per_step=3.6 * batch,
        mfu=0.5,
        peak_memory_mb=100.0,
        noisy=False,
        samples_ms=samples,
    )


def write_run(path, results, env=None):
    path.mkdir(parents=True)
    (path / "env.json").write_text(json.dumps(env or {"torch": "2.x", "cpu": "test"}))
    with (path / "results.jsonl").open("w") as f:
        for r in results:
            f.write(json.dumps(r.to_dict()) + "\n")


def test_report_renders_tables_and_pngs(tmp_path):
    results = [
        result(batch=b, precision=p, ms=10 * b / (2 if p == "bf16" else 1), channels_last=cl)
        for b in (1, 8)
        for p in ("fp32", "bf16")
        for cl in (False, True)
    ]
    results.append(Result.for_config(Config("resnet50", 64, device="cpu"), status="oom", error="x"))
    write_run(tmp_path / "run", results)
    assert report.main([str(tmp_path / "run")]) == 0
    summary = (tmp_path / "run" / "summary.md").read_text()
    assert "## inference on cpu" in summary
    header = next(
        line for line in summary.splitlines() if line.startswith("| model") and "fp32" in line
    )
    assert "bf16+cl" in header and "GFLOPs/img" in header
    assert "| oom" in summary.replace("  ", " ") or " oom " in summary
    assert "**" in summary  # the fastest setting is marked
    for png in ("throughput_inference_cpu.png", "speedup_inference_cpu.png"):
        data = (tmp_path / "run" / "plots" / png).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 5000
    csv = (tmp_path / "run" / "results.csv").read_text()
    assert "throughput_ips" in csv.splitlines()[0] and "samples_ms" not in csv


def test_compare_flags_a_planted_2x_slowdown_and_not_a_wobble(tmp_path):
    old = [result("resnet18", 8, ms=10, seed=1), result("resnet50", 8, ms=20, seed=2)]
    new = [result("resnet18", 8, ms=20, seed=3), result("resnet50", 8, ms=20.2, seed=4)]
    table = report.compare(new, old).set_index("model")
    assert table.loc["resnet18", "verdict"] == "slower"
    assert table.loc["resnet18", "speedup"] == pytest.approx(0.5, rel=0.02)
    assert table.loc["resnet50", "verdict"] == "unchanged"
    write_run(tmp_path / "old", old, {"torch": "2.1", "cpu": "a"})
    write_run(tmp_path / "new", new, {"torch": "2.2", "cpu": "a"})
    assert report.main([str(tmp_path / "new"), "--compare", str(tmp_path / "old")]) == 0
    text = (tmp_path / "new" / "compare.md").read_text()
    assert "0 faster, 1 slower, 1 unchanged" in text
    assert "environments differ" in text and "torch" in text


def test_compare_sees_a_real_speedup_through_noise():
    old = [result(ms=10, spread=0.08, seed=5)]
    new = [result(ms=8, spread=0.08, seed=6)]
    assert report.compare(new, old).loc[0, "verdict"] == "faster"


def test_older_runs_without_newer_fields_load(tmp_path):
    run = tmp_path / "old"
    run.mkdir()
    row = {"model": "resnet18", "batch_size": 4, "device": "cpu", "mode": "inference",
           "precision": "fp32", "channels_last": False, "compile": "off", "status": "ok",
           "latency_ms_median": 5.0, "throughput_ips": 800.0}  # fmt: skip
    (run / "results.jsonl").write_text(json.dumps(row) + "\n")
    assert report.main([str(run)]) == 0
    assert "800.0" in (run / "summary.md").read_text()


def test_report_bad_input_exits_2(tmp_path, capsys):
    assert report.main([str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert report.main([]) == 2
