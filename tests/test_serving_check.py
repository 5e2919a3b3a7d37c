"""scripts/serving_check.py: its arguments, the parser of benchmark_app's output (on outputs
captured from real runs of a tiny model, tests/fixtures/benchmark_app_*.txt), the comparison of
two sides and the markdown. Nothing here is timed."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from resbench.engine.measure import Config, Result

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import serving_check

FIXTURES = Path(__file__).resolve().parent / "fixtures"
HAS_OPENVINO = importlib.util.find_spec("openvino") is not None


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--streams", "0"], "--streams takes positive integers"),
        (["--streams", "1,,2"], "--streams has an empty item"),
        (["--threads", "-1"], "--threads takes positive integers"),
        (["--threads", "100000"], "exceeds the"),
        (["--seconds", "0"], "--seconds must be between 1 and 3600"),
        (["--seconds", "1.5"], "invalid int value"),
        (["--models", "resnet7"], "unknown model 'resnet7'"),
        (["--precisions", "fp64"], "unknown --precisions value 'fp64'"),
        (["--scenarios", "server"], "unknown --scenarios value 'server'"),
        (["--no-such-flag"], "unrecognized arguments"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(capsys, argv, says):
    assert serving_check.main([*argv, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("serving_check: error: ") and says in err
    assert err.count("\n") == 1


@pytest.mark.skipif(not HAS_OPENVINO, reason="benchmark_app ships in the openvino wheel")
def test_dry_run_alternates_the_order_and_runs_nothing(capsys, tmp_path):
    argv = ["--models", "small_resnet20", "--streams", "2", "--out", str(tmp_path / "out")]
    assert serving_check.main([*argv, "--dry-run"]) == 0
    blocks = capsys.readouterr().out.split("# ")[1:]
    one, two = serving_check.default_threads(1), serving_check.default_threads(2)
    assert [b.splitlines()[0] for b in blocks] == [
        f"small_resnet20-b1-fp32-single-stream-s1t{one}",
        f"small_resnet20-b1-fp32-offline-s2t{two}",
        "small_resnet20-b1-fp32-single-stream-hint-latency",
        "small_resnet20-b1-fp32-offline-hint-throughput",
    ]
    first, second = blocks[0].splitlines()[1:], blocks[1].splitlines()[1:]
    assert first[0].startswith("measure(") and "benchmark_app" in first[1]
    assert "benchmark_app" in second[0] and second[1].startswith("measure(")
    assert "-api sync -nstreams 1 -nthreads" in first[1]
    assert f"-api async -nstreams 2 -nireq 2 -nthreads {2 * two}" in second[0]
    assert "-hint latency -api sync" in blocks[2] and "-hint throughput -api async" in blocks[3]
    assert not (tmp_path / "out").exists()


def test_parse_sync_output():
    parsed = serving_check.parse_output((FIXTURES / "benchmark_app_sync.txt").read_text())
    assert parsed["api"] == "sync"
    assert parsed["latency_ms_median"] == pytest.approx(0.57205)  # printed as 572.05 us
    assert parsed["throughput_fps"] == pytest.approx(1661.23)
    assert parsed["iterations"] == 1662 and parsed["duration_ms"] == pytest.approx(1000.46)
    assert parsed["properties"]["NUM_STREAMS"] == "1"
    assert parsed["properties"]["PERFORMANCE_HINT"] == "LATENCY"
    assert parsed["properties"]["ENABLE_CPU_PINNING"] == "True"
    assert parsed["inputs"]["x"] == {"precision": "f32", "layout": "N,C,H,W", "shape": "1,3,32,32"}
    assert serving_check.picked(parsed) == (1, 2)
    assert parsed["errors"] == []


def test_parse_async_output():
    parsed = serving_check.parse_output((FIXTURES / "benchmark_app_async.txt").read_text())
    assert parsed["api"] == "async" and parsed["infer_requests"] == 2
    assert parsed["latency_ms_median"] == pytest.approx(1.38)  # printed in ms
    assert parsed["properties"]["PERFORMANCE_HINT"] == "THROUGHPUT"
    assert serving_check.picked(parsed) == (2, 1)  # 2 streams sharing 2 threads


def test_a_refused_command_is_not_compared():
    text = (
        "[Step 1/11] Parsing and validating input arguments\n[ ERROR ] -nstreams, -nthreads and "
        "-pin options are fine tune options.\nTraceback (most recent call last):\n"
    )
    parsed = serving_check.parse_output(text)
    assert parsed["throughput_fps"] is None and parsed["properties"] == {}
    row = serving_check.Row("resnet18", 1, "fp32", "single-stream", 1, 2)
    out = serving_check.compare(row, 1, 2, {"status": "ok"}, {"returncode": 1, **parsed})
    assert out["verdict"].startswith("not compared: -nstreams, -nthreads and -pin")


def _sides(res_ips, res_ms, bapp_ips, bapp_ms, **props):
    base = {"NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": "2", "ENABLE_CPU_PINNING": "True"}
    res = {"status": "ok", "throughput_ips": res_ips, "latency_ms_median": res_ms,
           "measure_s": 0.5, "iterations": 50, "foreign_cpu": 0.0, "compiled_model": base}  # fmt: skip
    bapp = {
        "returncode": 0, "throughput_fps": bapp_ips, "latency_ms_median": bapp_ms,
        "latency_ms_average": bapp_ms, "duration_ms": 1000.0, "iterations": 100, "errors": [],
        "inputs": {"x": {"precision": "f32"}}, "properties": base | props,
    }  # fmt: skip
    return res, bapp


def test_compare_verdicts_and_the_facts_that_differ():
    row = serving_check.Row("resnet18", 1, "fp32", "single-stream", 1, 2)
    out = serving_check.compare(row, 1, 2, *_sides(105.0, 9.6, 100.0, 10.0))
    assert out["verdict"] == "within 10%" and out["differences"] == []
    assert out["ratios"]["throughput"] == pytest.approx(1.05)
    assert out["ratios"]["latency_median"] == pytest.approx(0.96)
    out = serving_check.compare(
        row, 1, 2, *_sides(80.0, 12.5, 100.0, 10.0, ENABLE_CPU_PINNING="False")
    )
    assert out["verdict"] == "differs: throughput, latency_median"
    assert "ENABLE_CPU_PINNING: resbench True, benchmark_app False" in out["differences"]
    assert any(d.startswith("resbench measured 0.50 s (50 calls)") for d in out["differences"])
    out = serving_check.compare(row, 1, 2, *_sides(100.0, 10.0, 100.0, 10.0, NUM_STREAMS="2"))
    assert "benchmark_app ran 2 streams x 1 threads, not 1 x 2" in out["differences"]


def test_an_offline_row_says_how_busy_each_side_kept_its_streams():
    row = serving_check.Row("resnet18", 1, "fp32", "offline", 2, 1)
    res, bapp = _sides(100.0, 10.0, 100.0, 20.0, NUM_STREAMS="2", INFERENCE_NUM_THREADS="2")
    res["compiled_model"] = bapp["properties"]
    out = serving_check.compare(row, 2, 1, res, bapp)
    assert out["ratios"]["occupancy"] == {"resbench": 0.5, "benchmark_app": 1.0}
    assert (
        "a stream is in a call 50% of the time by resbench's figures, 100% by benchmark_app's"
        in (out["differences"])
    )


def test_a_side_run_under_load_is_marked():
    row = serving_check.Row("resnet18", 1, "fp32", "single-stream", 1, 2)
    res, bapp = _sides(100.0, 10.0, 100.0, 10.0)
    out = serving_check.compare(row, 1, 2, res, bapp | {"foreign_cpu": 0.9})
    assert out["verdict"] == "within 10%, under load (benchmark_app)"
    assert "other processes kept 0.90 cores busy while benchmark_app ran" in out["differences"]


def test_an_offline_row_from_a_measure_without_offline_is_refused():
    config = Config("resnet18", 1, device="cpu", backend="openvino", scenario="offline", streams=2)
    single = Result.for_config(config, status="ok", throughput_ips=100.0, latency_ms_median=10.0)
    assert serving_check.resbench_figures(single)["status"] == "error"
    served = Result.for_config(config, status="ok", throughput_ips=100.0, requests=400)
    assert serving_check.resbench_figures(served)["status"] == "ok"


def test_markdown_has_the_table_the_machine_and_the_differences():
    res, bapp = _sides(105.0, 9.6, 100.0, 10.0)
    rows = [
        {"model": "resnet18", "batch": 1, "precision": "fp32", "scenario": "single-stream",
         "streams": 1, "threads": 2, "hint": None, "resbench": res,
         "benchmark_app": bapp | {"api": "sync"}, "ratios": {"throughput": 1.05,
         "latency_median": 0.96}, "verdict": "within 10%", "differences": []},
        {"model": "resnet50", "batch": 1, "precision": "fp32", "scenario": "offline",
         "streams": 2, "threads": 1, "hint": "throughput",
         "resbench": {"status": "error", "throughput_ips": 55.5}, "benchmark_app": bapp,
         "ratios": {}, "verdict": "not compared: no resbench row at this setting",
         "differences": ["ENABLE_CPU_PINNING: resbench True, benchmark_app False"]},
    ]  # fmt: skip
    record = {"machine": {"cpu": "AMD EPYC", "logical_cores": 2, "openvino": "2026.4.1"},
              "command": "python scripts/serving_check.py", "seconds": 10, "rows": rows}  # fmt: skip
    md = serving_check.markdown(record)
    assert "Machine: AMD EPYC, 2 logical cores; openvino 2026.4.1" in md
    assert "`python scripts/serving_check.py` (10 s a side" in md
    table = [line for line in md.splitlines() if line.startswith("| resnet")]
    assert table[0] == (
        "| resnet18 | 1 | fp32 | single-stream | 1 x 2 | -api sync | 105.0 | 100.0 | 1.050 | "
        "9.600 | 10.000 | 0.960 | within 10% |"
    )
    assert "| 2 x 1 | -hint throughput | - | 100.0 | - |" in table[1]  # a failed side: no figure
    assert "- resnet50 b1 fp32 offline -hint throughput: ENABLE_CPU_PINNING" in md


@pytest.mark.skipif(not HAS_OPENVINO, reason="needs openvino")
@pytest.mark.parametrize("scenario, streams, threads", [("single-stream", 1, 1), ("offline", 2, 1)])
def test_compiled_properties_reach_resbench_compiled_model(scenario, streams, threads):
    from resbench.engine.preparation import prepare

    config = Config("small_resnet20", 1, device="cpu", backend="openvino", scenario=scenario,
                    streams=streams, threads=threads)  # fmt: skip
    with prepare(config) as p:
        props = serving_check.compiled_properties(p)
        digest = serving_check.file_hash(p.workdir)
    assert props is not None and props["NUM_STREAMS"] == str(streams)
    assert props["INFERENCE_NUM_THREADS"] == str(streams * threads)
    assert "ENABLE_CPU_PINNING" in props and len(digest) == 64
