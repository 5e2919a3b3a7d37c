"""The pytest-benchmark JSON that `pytest benchmarks` saves loads into resbench's report."""

from __future__ import annotations

import json

from resbench import report


def test_autosaved_json_is_self_describing_and_renders(benchmark_run, tmp_path):
    out, _ = benchmark_run  # small_resnet20 at batch 2, fp32 and fp32+cl (tests/conftest.py)
    data = json.loads(out.read_text())
    assert data["machine_info"]["resbench"]["torch"]
    assert len(data["benchmarks"]) == 2
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        for key in ("model", "batch_size", "precision", "channels_last", "compile", "params",
                    "gflops_per_image", "throughput_ips", "peak_memory_mb"):  # fmt: skip
            assert key in info, key
        assert info["throughput_ips"] == 2 / bench["stats"]["median"]
    env, results = report.load(out)
    assert env["torch"]
    assert {r.setting for r in results} == {"fp32", "fp32+cl"}
    assert all(r.latency_ms_p99 >= r.latency_ms_median > 0 for r in results)
    assert report.main(["--pytest-benchmark", str(out), "--out", str(tmp_path / "rep")]) == 0
    assert "small_resnet20" in (tmp_path / "rep" / "summary.md").read_text()
    assert (
        report.main(
            ["--pytest-benchmark", str(out), "--compare", str(out), "--out", str(tmp_path / "c")]
        )
        == 0
    )
    text = (tmp_path / "c" / "compare.md").read_text()  # one process a side: untested
    assert "0 faster, 0 slower, 0 unchanged, 2 inconclusive" in text
