from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest

from resbench import report
from resbench.engine.measure import Config, Result


def result(
    model="resnet18", batch=8, precision="fp32", ms=10.0, spread=0.01, seed=0, forks=0, **kw
):
    """A Result around ``ms``; with ``forks``, that many fork medians ``spread`` apart (relative
    sd), the headline their median, as a sweep with --forks writes it."""
    rng = np.random.default_rng(seed)
    samples = list(ms * (1 + spread * rng.standard_normal(40)))
    config = Config(model, batch, device="cpu", precision=precision, **kw)
    medians = list(ms * np.exp(spread * rng.standard_normal(forks)))
    fork_fields = {"forks": forks, "fork_medians_ms": medians} if forks else {}
    return Result.for_config(
        config,
        **fork_fields,
        latency_ms_median=float(np.median(medians if forks else samples)),
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
        line for line in summary.splitlines() if line.startswith("| model") and "GFLOPs" in line
    )
    assert "bf16+cl" in header and "fp32+cl" in header
    assert "| oom" in summary.replace("  ", " ") or " oom " in summary
    assert "**" in summary  # the fastest setting is marked
    for png in ("throughput_inference_cpu.png", "speedup_inference_cpu.png", "roofline_cpu.png"):
        data = (tmp_path / "run" / "plots" / png).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 5000
    csv = (tmp_path / "run" / "results.csv").read_text()
    assert "throughput_ips" in csv.splitlines()[0] and "samples_ms" not in csv


def planted() -> tuple[list[Result], list[Result]]:
    """(new, old) with 3 forks a Config: resnet18 2x slower, resnet50 the same."""
    old = [
        result("resnet18", 8, ms=10, seed=1, forks=3),
        result("resnet50", 8, ms=20, seed=2, forks=3),
    ]
    new = [
        result("resnet18", 8, ms=20, seed=3, forks=3),
        result("resnet50", 8, ms=20.2, seed=4, forks=3),
    ]
    return new, old


def test_compare_flags_a_planted_2x_slowdown_and_not_a_wobble(tmp_path):
    new, old = planted()
    only_new = result("resnet34", 8, ms=15, seed=5)  # measured in one run: said, not compared
    table = report.compare(new, old).set_index("model")
    assert table.loc["resnet18", "verdict"] == "slower"
    assert table.loc["resnet18", "speedup"] == pytest.approx(0.5, rel=0.02)
    assert table.loc["resnet18", "speedup low"] < 0.5 < table.loc["resnet18", "speedup high"] < 0.95
    assert table.loc["resnet50", "verdict"] == "unchanged"
    assert (
        0.95
        <= table.loc["resnet50", "speedup low"]
        < 1
        < table.loc["resnet50", "speedup high"]
        <= 1.05
    )
    assert table.loc["resnet50", "forks"] == "3/3"
    write_run(tmp_path / "old", old, {"torch": "2.1", "cpu": "a"})
    write_run(tmp_path / "new", [*new, only_new], {"torch": "2.2", "cpu": "a"})
    assert report.main([str(tmp_path / "new"), "--compare", str(tmp_path / "old")]) == 0
    text = (tmp_path / "new" / "compare.md").read_text()
    assert text.startswith("# Comparison: new (new) against old (old)")
    assert "0 faster, 1 slower, 1 unchanged, 0 inconclusive" in text
    header = next(line for line in text.splitlines() if line.startswith("| model"))
    assert "forks old/new" in header and "interval" in header
    assert (
        "Only part of the rows were compared: 1 ok Config of the new run and 0 of the old matched "
        "nothing in the other run; nearest rows differ in model (new resnet34; old resnet18 or "
        "resnet50): 1 row." in text
    )
    assert "machines differ" in text and "torch: 2.1 -> 2.2" in text


def test_compare_sees_a_real_speedup_through_noise():
    old = [result(ms=10, spread=0.04, seed=5, forks=4)]
    new = [result(ms=8, spread=0.04, seed=6, forks=4)]
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


def test_mfu_is_never_shown_above_100_percent_and_an_old_row_above_its_peak_is_flagged(tmp_path):
    # results/backends-cpu: ONNX Runtime and OpenVINO rows beat a lone 2048^3 matmul, MFU 104%
    import html

    fast = result(batch=8, ms=5, backend="openvino").to_dict()
    fast = {k: v for k, v in fast.items() if k not in ("peak_exceeded", "peak_probe")}
    fast |= {"tflops_achieved": 0.216, "peak_tflops": 0.2075, "mfu": 1.04}  # from before the flag
    probed = result(batch=8, ms=10).to_dict() | {
        "tflops_achieved": 0.1, "peak_tflops": 0.25, "mfu": 0.4,
        "peak_probe": "conv3x3 oneDNN 32x256x14x14 cl", "peak_exceeded": False,
    }  # fmt: skip
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.jsonl").write_text(json.dumps(fast) + "\n" + json.dumps(probed) + "\n")
    assert report.main([str(run)]) == 0
    summary = (run / "summary.md").read_text()
    page = html.unescape((run / "report.html").read_text())
    warning = "MFU not shown for 1 rows: they beat the probe's peak, a probe defect"
    for text in (summary, page):
        assert "104%" not in text and warning in text and "over peak" in text
    assert "resnet18 b8 inference fp32+openvino (0.216 TFLOP/s, peak 0.207, probe not" in summary
    assert "cpu fp32 0.250 TFLOP/s (conv3x3 oneDNN 32x256x14x14 cl)" in summary  # which probe
    assert "40%" in summary
    loaded = {r.backend: r for r in report.read_results(run)}
    assert loaded["openvino"].peak_exceeded is True and loaded["openvino"].mfu is None
    # a Result built in memory with an MFU above 1 is shown the same way
    frame = report.results_frame(
        [dataclasses.replace(loaded["eager"], mfu=1.2, peak_exceeded=None)]
    )
    assert frame["peak_exceeded"].tolist() == [True] and frame["mfu"].isna().all()


def test_report_bad_input_exits_2(tmp_path, capsys):
    assert report.main([str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert report.main([]) == 2


def _lines_after(text: str, heading: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index(heading)
    return [line for line in lines[start + 1 :] if line.startswith("|")]


def test_summary_opens_with_answers_and_speedups(tmp_path):
    results = [
        result(batch=b, precision=p, ms=10 * b / (2 if p == "bf16" else 1), seed=b)
        for b in (1, 8)
        for p in ("fp32", "bf16")
    ]
    results.append(result("resnet34", 4, ms=20, seed=9))  # a model measured at one batch size
    write_run(tmp_path / "run", results)
    assert report.main([str(tmp_path / "run")]) == 0
    summary = (tmp_path / "run" / "summary.md").read_text()
    sections = [line for line in summary.splitlines() if line.startswith("## ")]
    assert sections[0] == "## Answers: inference on cpu (cpu)"
    answer = _lines_after(summary, "## Answers: inference on cpu (cpu)")
    assert "fastest" in answer[0] and "vs fp32" in answer[0] and "MFU" in answer[0]
    rows = [line.replace(" ", "") for line in answer[2:]]
    assert rows[0].startswith("|resnet18|1|bf16|") and "|2.00x|50%|" in rows[0]
    assert any(r.startswith("|resnet34|4|fp32(onlyonemeasured)|") for r in rows)
    detail = _lines_after(summary, "### inference on cpu: details")
    assert "vs fp32" in detail[0] and "BW" in detail[0] and "bound" in detail[0]
    assert any("|bf16|" in r.replace(" ", "") and "2.00x" in r for r in detail)


def test_a_model_at_several_input_sizes_keeps_a_row_per_size(tmp_path):
    results = [
        result("resnet50", 8, precision=p, ms=ms * (2 if p == "fp32" else 1), image_size=size)
        for size, ms in ((224, 10.0), (288, 16.5))
        for p in ("fp32", "bf16")
    ] + [result("resnet18", 8, ms=5.0)]  # one size only: named as before
    write_run(tmp_path / "run", results)
    assert report.main([str(tmp_path / "run")]) == 0
    summary = (tmp_path / "run" / "summary.md").read_text().replace(" ", "")
    answer = _lines_after(summary, "##Answers:inferenceoncpu(cpu)")
    for size in ("224px", "288px"):
        assert any(r.startswith(f"|resnet50{size}|8|bf16|") and "|2.00x|" in r for r in answer)
    assert any(r.startswith("|resnet18|8|") for r in answer)
    rows = [line for line in summary.splitlines() if line.startswith("|resnet50288px|8|")]
    assert len(rows) == 4  # answer, throughput and two detail rows, apart from 224px
    page = (tmp_path / "run" / "report.html").read_text()
    assert "resnet50 288px" in page and "resnet50 224px" in page


def test_speedups_use_only_batch_sizes_both_sides_have():
    results = [
        result(batch=1, ms=10),
        result(batch=8, ms=40),
        result(batch=8, precision="bf16", ms=20),
    ]
    table = report.speedups_per_batch(report.results_frame(results))
    assert list(table.index) == [("resnet18", 8)]  # batch 1 has no bf16: no bar averages over it
    assert table.loc[("resnet18", 8), "bf16"] == pytest.approx(2.0, rel=0.05)


def test_one_colour_per_setting_across_a_run():
    first = report.colours(["bf16+cl", "fp32", "bf16"])
    second = report.colours(["fp32", "bf16", "bf16+cl", "fp32+cl"])
    assert first["bf16+cl"] != first["bf16"] != first["fp32"]
    # the order settings were met in does not move colours; the run's set does
    assert report.colours(["bf16", "bf16+cl", "fp32"]) == first
    assert len(set(second.values())) == 4


def test_noisy_and_loaded_points_are_marked_with_iqr_bars(tmp_path):
    from resbench.report import plots

    plt = plots.pyplot()
    results = [result(batch=b, ms=10 * b, seed=b) for b in (1, 8)]
    results[1] = dataclasses.replace(results[1], noisy=True)
    frame = report.with_speedups(report.results_frame(results))
    fig = plots.throughput_plot(plt, frame, report.colours(frame["setting"]), "t")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "8"]
    hollow = [c for c in ax.collections if c.get_gid() == "distrusted"]
    assert len(hollow) == 1 and list(hollow[0].get_offsets()[:, 0]) == [8]  # the noisy point only
    bars = [c for c in ax.collections if type(c).__name__ == "LineCollection"]
    assert bars and len(bars[0].get_segments()) == 2  # an IQR bar per point
    plt.close(fig)


def test_roofline_places_rows_by_intensity_and_says_what_bounds_them():
    results = [result(batch=8, ms=10), result("resnet50", 8, ms=80, seed=3)]
    results = [
        dataclasses.replace(r, peak_tflops=1.0, gflops_per_step=r.gflops_per_image * 8)
        for r in results
    ]
    env = {"bandwidth_gbs": {"cpu": 200.0}}  # under the memory roof (over it: no BW shown)
    roof = report.roofline(report.results_frame(results), env).set_index("model")
    from resbench.engine.flops import count_bytes, count_flops

    moved = count_bytes("resnet18", 224).bytes_per_step(8)
    assert roof.loc["resnet18", "bytes_per_step"] == moved
    assert roof.loc["resnet18", "intensity"] == pytest.approx(3.6e9 * 8 / moved)
    seconds = roof.loc["resnet18", "latency_ms_median"] / 1e3
    assert roof.loc["resnet18", "bandwidth_fraction"] == pytest.approx(moved / seconds / 200e9)
    assert set(roof["bound"]) <= {"compute", "memory", "overhead"}
    assert count_flops("resnet18", 224).total > 0
    # without a recorded bandwidth the row still has its compute ceiling, and no memory verdict
    assert report.roofline(report.results_frame(results), {})["bandwidth_fraction"].isna().all()


def test_load_rule_in_one_function():
    quiet = [dataclasses.replace(result(seed=i), foreign_cpu=0.1) for i in range(4)]
    assert report.load_warning(quiet) is None
    median_busy = [dataclasses.replace(r, foreign_cpu=0.3) for r in quiet]
    text = report.load_warning(median_busy)
    assert "4 of 4" in text and "median 0.30" in text
    one_spike = [*quiet[:3], dataclasses.replace(quiet[3], foreign_cpu=0.6)]
    assert "max 0.60" in report.load_warning(one_spike)
    assert report.load_warning([result()]) is None  # foreign_cpu not recorded: nothing to say


def test_headline_never_hides_noisy_or_loaded_rows(tmp_path):
    rows = [
        dataclasses.replace(result(seed=i, batch=i + 1), noisy=i < 3, foreign_cpu=0.9)
        for i in range(4)
    ]
    write_run(tmp_path / "run", rows)
    assert report.main([str(tmp_path / "run")]) == 0
    summary = (tmp_path / "run" / "summary.md").read_text()
    top = summary.split("## Answers")[0]
    assert "4 results: 4 ok; of the 4 ok, 3 noisy or throttled and 4 under load" in top
    assert "measured under load: 4 of 4" in top and "median 0.90" in top


def test_newer_fields_are_shown_when_present(tmp_path):
    base = result(batch=8, ms=10)
    extra = dataclasses.replace(
        result(batch=8, ms=5, precision="bf16"),
        images_per_joule=12.5, throttled=True, throttle_reasons="thermal", repeats=3,
        repeat_spread=0.04, backend="openvino", max_abs_diff=1e-3, top1_agreement=0.99,
        forks=3, fork_medians_ms=[5.0, 4.6, 5.3], fork_spread=0.14,
    )  # fmt: skip
    report.write_outputs(tmp_path, {}, [base, extra], "t")
    summary = (tmp_path / "summary.md").read_text()
    assert "img/J" in summary and "12.50" in summary and "repeat spread" in summary
    assert "fork spread" in summary and "14% of 3" in summary  # between fresh processes
    assert "<th>fork spread</th>" in (tmp_path / "report.html").read_text()
    assert "throttled: thermal" in summary and "1 noisy or throttled" in summary
    assert "bf16+openvino~" in summary and "top-1 99.0%" in summary


def test_compare_says_a_row_was_measured_under_load():
    old = [dataclasses.replace(result(ms=10, seed=1, forks=2), foreign_cpu=0.0)]
    new = [dataclasses.replace(result(ms=5, seed=2, forks=2), foreign_cpu=1.0)]
    table = report.compare(new, old)
    assert table.loc[0, "verdict"] == "faster, under load"
    assert "new run: 1.00 cores busy elsewhere" in table.loc[0, "note"]
    text = report.compare_markdown({}, new, {}, old, 0.05)
    assert "The new run was measured under load" in text and "different loads" in text


def _bench_json(path, median_s, save_data=False):
    benchmarks = []
    for setting, cl in (("fp32", False), ("fp32+cl", True)):
        stats = {"median": median_s, "iqr": median_s * 0.01, "rounds": 5}
        if save_data:
            stats["data"] = [median_s * (1 + 0.001 * i) for i in range(5)]
        info = {"model": "small_resnet20", "batch_size": 2, "device": "cpu", "precision": "fp32",
                "channels_last": cl, "compile": "off", "mode": "inference"}  # fmt: skip
        benchmarks.append({"name": setting, "stats": stats, "extra_info": info})
    path.write_text(json.dumps({"benchmarks": benchmarks, "machine_info": {}, "version": "5"}))
    return path


def test_a_40x_regression_in_pytest_benchmark_files_fails_the_gate(tmp_path, capsys):
    # every round of a pytest-benchmark file comes from one process, so its rounds test nothing;
    # but 40x is far beyond how far fresh processes of identical code land (the A/A prior), so it
    # is "slower" and --fail-on slower stops it, as pytest-benchmark's compare-fail would
    old = _bench_json(tmp_path / "old.json", 0.001, save_data=True)
    new = _bench_json(tmp_path / "new.json", 0.040, save_data=True)
    out = tmp_path / "out"
    argv = ["--pytest-benchmark", str(new), "--compare", str(old), "--out", str(out)]
    assert report.main([*argv, "--fail-on", "slower"]) == 1
    assert "--fail-on slower: 2 of 2 rows slower" in capsys.readouterr().err
    text = (out / "compare.md").read_text()
    assert "0 faster, 2 slower, 0 unchanged, 0 inconclusive" in text
    assert "changed by +3900.0%, one process per side: beyond the spread between processes" in text
    assert "both runs are pytest-benchmark files: their rounds all come from one process" in text
    assert "tested against the between-process spread of A/A runs on AMD EPYC" in text
    assert "0.025x" in text and "Mann-Whitney" not in text
    table = report.compare(report.load(new)[1], report.load(old)[1])
    assert list(table["verdict"]) == ["slower", "slower"] and (table["p"] < 1e-3).all()
    assert (out / "compare.html").exists()
    # a sweep with forks against a pytest-benchmark file: one process on the old side
    run = tmp_path / "run"
    write_run(
        run, [result("small_resnet20", 2, ms=40, forks=2, channels_last=cl) for cl in (False, True)]
    )
    assert report.main([str(run), "--compare", str(old), "--fail-on", "slower"]) == 1
    assert "one process on the old side: beyond the spread" in (run / "compare.md").read_text()


def test_a_change_within_the_spread_between_processes_stays_inconclusive(tmp_path, capsys):
    # 20% from one process a side is within what fresh processes of identical code show: it is
    # neither slower nor unchanged, it passes --fail-on slower and stops --fail-on inconclusive
    old = _bench_json(tmp_path / "old.json", 0.010, save_data=True)
    new = _bench_json(tmp_path / "new.json", 0.012, save_data=True)
    argv = ["--pytest-benchmark", str(new), "--compare", str(old), "--out", str(tmp_path / "o")]
    assert report.main([*argv, "--fail-on", "slower"]) == 0
    text = (tmp_path / "o" / "compare.md").read_text()
    assert "0 faster, 0 slower, 0 unchanged, 2 inconclusive" in text
    assert "changed by +20.0%, one process per side: within the spread between processes" in text
    assert report.main([*argv, "--fail-on", "inconclusive"]) == 1
    assert "--fail-on inconclusive: 2 of 2 rows slower or inconclusive" in capsys.readouterr().err


def test_the_prior_is_the_users_own_hosts_when_given(tmp_path, capsys):
    from resbench.report import prior as prior_module

    shipped = prior_module.load()
    # a host whose processes never wander: 2.5x from one process a side is then a real change
    tight = dataclasses.replace(shipped, intercept=-12.0, slope=0.0, d0=50.0, host="my host")
    aa = tmp_path / "aa.json"
    aa.write_text(json.dumps({"machine": {}, prior_module.KEY: tight.to_dict()}))
    old = _bench_json(tmp_path / "old.json", 0.010, save_data=True)
    new = _bench_json(tmp_path / "new.json", 0.025, save_data=True)
    argv = ["--pytest-benchmark", str(new), "--compare", str(old), "--fail-on", "slower"]
    assert report.main([*argv, "--out", str(tmp_path / "a")]) == 0  # within the shipped spread
    assert report.main([*argv, "--out", str(tmp_path / "b"), "--prior", str(aa)]) == 1
    assert "A/A runs on my host" in (tmp_path / "b" / "compare.md").read_text()
    capsys.readouterr()
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert report.main([*argv, "--prior", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no one-process prior in it" in err


def _wild(batch=4, samples=(1.0, 1.0, 1.0, 1.0, 2.0, 30.0, 30.0, 30.0, 30.0)):
    """A Result whose latency IQR (29 ms) is far over twice its median (2 ms)."""
    median = float(np.median(samples))
    return dataclasses.replace(
        result(batch=batch),
        latency_ms_median=median,
        latency_ms_iqr=float(np.subtract(*np.percentile(samples, [75, 25]))),
        throughput_ips=batch / median * 1e3,
        noisy=True,
        samples_ms=list(samples),
    )


def test_throughput_bars_are_images_per_s_at_the_quartile_latencies():
    from resbench.report import html, plots

    wild = _wild()
    assert wild.latency_ms_iqr > 2 * wild.latency_ms_median
    p25, p75 = np.percentile(wild.samples_ms, [25, 75])
    ips = wild.throughput_ips
    want = (4 / (p75 / 1e3), 4 / (p25 / 1e3))  # images/s at p75 (low end), at p25 (high end)
    bare = dataclasses.replace(result(batch=8, ms=10), samples_ms=[])  # no samples: no bar
    frame = report.with_speedups(report.results_frame([wild, bare]))
    colour = report.colours(frame["setting"])

    plt = plots.pyplot()
    fig = plots.throughput_plot(plt, frame, colour, "t")
    ax = fig.axes[0]
    bars = next(c for c in ax.collections if type(c).__name__ == "LineCollection")
    segments = [np.asarray(seg) for seg in bars.get_segments()]
    ends = [sorted(seg[:, 1]) for seg in segments if seg.ndim == 2 and np.isfinite(seg).all()]
    assert len(ends) == 1  # the row without samples has no bar, not a made-up one
    low, high = ends[0]
    assert 0 < low < ips < high and np.isfinite(high)
    assert (low, high) == pytest.approx(want)
    assert ax.get_ylim()[1] < 2 * want[1]
    plt.close(fig)

    page_fig = html.throughput_figure(frame, colour, "t")
    trace = next(t for t in page_fig.data if t.error_y.array is not None)  # what the page embeds
    (y, _), (above, bare_above) = trace.y, trace.error_y.array
    below, bare_below = trace.error_y.arrayminus
    assert (y - below, y + above) == pytest.approx(want)
    assert y - below > 0 and np.isnan(bare_above) and np.isnan(bare_below)


def test_one_off_column_shows_compile_time_and_blank_for_unknown(tmp_path):
    compiled = dataclasses.replace(
        result(batch=8, ms=5, compile="default"), compile_time_s=40.0, prepare_s=0.0
    )
    exported = dataclasses.replace(result(batch=8, ms=6, backend="onnxruntime"), prepare_s=2.5)
    unknown = result(batch=8, ms=10)  # an old run's row: neither prepare_s nor compile_time_s
    assert unknown.prepare_s is None and unknown.compile_time_s is None
    report.write_outputs(tmp_path, {}, [unknown, compiled, exported], "t")
    detail = _lines_after((tmp_path / "summary.md").read_text(), "### inference on cpu: details")
    heads = [c.strip() for c in detail[0].strip("|").split("|")]
    col = heads.index("one-off s")
    cells = {
        row[heads.index("setting")]: row[col]
        for row in ([c.strip() for c in line.strip("|").split("|")] for line in detail[2:])
    }
    assert cells == {"fp32": "", "fp32+compile": "40.0", "fp32+onnxruntime": "2.5"}
    page = (tmp_path / "report.html").read_text()
    table = page[page.index('id="results"') :]
    assert "<th>one-off s</th>" in table and "<th>prepare s</th>" not in table
    assert '<td data-v="40.0" data-f="40.0">40.0</td>' in table
    assert 'data-v="0.0"' not in table  # the unknown is blank, never 0.0


def test_rows_that_never_got_quiet_are_named_in_summary_and_page(tmp_path):
    waited = dataclasses.replace(result(batch=8), quiet=False, quiet_wait_s=6.0)
    calm = dataclasses.replace(result(batch=16, seed=2), quiet=True, quiet_wait_s=0.5)
    report.write_outputs(tmp_path, {}, [waited, calm], "t")
    summary = (tmp_path / "summary.md").read_text()
    warns = summary.split("## Warnings")[1].split("## ")[0]
    assert "1 results never got a quiet machine" in warns
    assert "resnet18 b8 inference fp32 (waited 6.0 s)" in warns and "b16" not in warns
    assert "never quiet (waited 6.0 s)" in summary  # and in the row's noise note
    page = (tmp_path / "report.html").read_text()
    assert "never got a quiet machine" in page
    assert "resnet18 b8 inference fp32 (waited 6.0 s)" in page
    assert "<th>got quiet</th>" in page and "<th>quiet wait s</th>" in page


@pytest.mark.parametrize("diff, shown", [(float("nan"), "NaN"), (float("inf"), "inf")])
def test_a_non_finite_max_abs_diff_is_never_shown_as_agreement(tmp_path, diff, shown):
    fine = dataclasses.replace(result(batch=8, ms=10), max_abs_diff=0.0, top1_agreement=1.0)
    broken = dataclasses.replace(
        result(batch=8, ms=5, backend="onnxruntime"), max_abs_diff=diff, top1_agreement=1.0
    )
    write_run(tmp_path / "run", [fine, broken])  # written as JSON NaN/Infinity, as old runs hold
    assert report.main([str(tmp_path / "run")]) == 0
    summary = (tmp_path / "run" / "summary.md").read_text()
    answer = _lines_after(summary, "## Answers: inference on cpu (cpu)")[2]
    assert f"max abs diff {shown}: outputs not finite" in answer and "top-1" not in answer
    warns = summary.split("## Warnings")[1].split("## ")[0]
    assert f"resnet18 b8 inference fp32+onnxruntime ({shown})" in warns
    page = (tmp_path / "run" / "report.html").read_text()
    assert f'data-f="{shown}">{shown}</td>' in page and "outputs held NaN or Inf" in page
    assert 'data-f="n/a">n/a</td>' in page  # its top-1 is not shown as agreement either


def test_bad_compare_input_exits_2_before_writing_anything(tmp_path, capsys):
    write_run(tmp_path / "run", [result(batch=8)])
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*")}
    assert report.main([str(tmp_path / "run"), "--compare", str(tmp_path / "notarun")]) == 2
    assert "notarun" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*")} == before


def test_pytest_benchmark_summary_says_the_load_is_unknown(tmp_path):
    bench = _bench_json(tmp_path / "b.json", 0.001)
    assert report.main(["--pytest-benchmark", str(bench), "--out", str(tmp_path / "out")]) == 0
    top = (tmp_path / "out" / "summary.md").read_text().split("## Answers")[0]
    assert "the load unknown" in top and "under load" not in top
    partly = [result(batch=8), dataclasses.replace(result(batch=16), foreign_cpu=0.9)]
    assert "1 under load (the load of 1 not recorded)" in report.headline(partly)


def test_one_process_sweep_rows_are_inconclusive_and_say_how_to_get_forks(tmp_path):
    old = [result(batch=8, ms=10)]  # a run from before forks: one process per Config
    new = [result(batch=8, ms=20)]
    write_run(tmp_path / "old", old)
    write_run(tmp_path / "new", new)
    assert report.main([str(tmp_path / "new"), "--compare", str(tmp_path / "old")]) == 0
    text = (tmp_path / "new" / "compare.md").read_text()
    assert "changed by +100.0%, one process per side" in text and "inconclusive" in text
    assert "1 row has one process on a side" in text and "sweep with --forks 2 or more" in text
    assert "pytest-benchmark" not in text
    table = report.compare(new, [result(batch=8, ms=10, forks=2, spread=0.0)])
    assert re.match(r"changed by \+\d+\.\d%, one process on the new side: ", table.loc[0, "note"])
    assert table.loc[0, "forks"] == "2/1"


def test_the_summary_names_the_cpu_arithmetic_and_rows_whose_label_would_be_false():
    from resbench.report.tables import summary_markdown

    ok = Result(model="resnet18", batch_size=1, device="cpu", latency_ms_median=10.0,
                throughput_ips=100.0, effective_precision="fp32",
                compute_kernel="brg_conv_fwd:avx2")  # fmt: skip
    skipped = Result(model="resnet18", batch_size=1, device="cpu", precision="bf16",
                     backend="openvino", status="skipped", effective_precision="fp32",
                     error="OpenVINO's CPU plugin lists no BF16 on this CPU")  # fmt: skip
    env = {"cpu": "AMD EPYC", "cpu_flags": ["avx2", "fma"], "torch_cpu_capability": "AVX2",
           "onednn_bf16_kernel": None, "onednn_fp32_kernel": "brg_conv_fwd:avx2"}  # fmt: skip
    text = summary_markdown(env, [ok, skipped], "run")
    assert "CPU arithmetic: flags avx2, fma; PyTorch's vector capability AVX2" in text
    # the computed-in column: a row from before each row's kernels were read names the probe's
    assert "fp32 (probe: brg_conv_fwd:avx2; not read off this row)" in text
    assert "resnet18 b1 inference bf16+openvino (it would compute fp32)" in text
    assert "not recorded (a run from before" in summary_markdown({"cpu": "x"}, [ok], "old run")


def test_the_summary_names_every_invocation_of_a_resumed_run(tmp_path):
    from resbench import runfolder

    run = tmp_path / "run"
    write_run(run, [result()], {"torch": "2.x", "cpu": "test", "command": "python -m first"})
    runfolder.record_invocation(run, "python -m resbench.sweep --out run", {}, resume=False)
    runfolder.record_invocation(run, "python -m resbench.sweep --resume --out run", {}, True)
    runfolder.record_invocation(run, "python -m resbench.sweep --resume --models x", {}, True)
    assert report.main([str(run)]) == 0
    summary = (run / "summary.md").read_text()
    assert "- commands (3 invocations: 1 start and 2 resumes), in order:" in summary
    for n, tail in ((1, "--out run` (started"), (2, "--resume --out run` (resume, started"),
                    (3, "--resume --models x` (resume, started")):  # fmt: skip
        assert f"  {n}. `python -m resbench.sweep {tail}" in summary
    assert "python -m first" not in summary  # env.json's copy of the first command, not repeated
    assert "--resume --models x" in (run / "report.html").read_text()
    # one invocation: the command as before; a damaged run.json does not stop the report
    (run / runfolder.RUN_FILE).write_text("{")
    assert report.main([str(run)]) == 0
    assert "- command: `python -m first`" in (run / "summary.md").read_text()


def _forked_runs(tmp_path):
    """An old and a new run on disk: ``planted``."""
    new, old = planted()
    write_run(tmp_path / "old", old)
    write_run(tmp_path / "new", new)
    return str(tmp_path / "new"), str(tmp_path / "old")


def test_threshold_takes_a_percent_or_a_fraction_and_refuses_a_bare_number_over_1(tmp_path, capsys):
    new, old = _forked_runs(tmp_path)
    for given in ("5%", "0.05"):
        assert report.main([new, "--compare", old, "--threshold", given]) == 0
        assert "1 slower, 1 unchanged" in Path(new, "compare.md").read_text()
        assert "threshold 5%" in Path(new, "compare.md").read_text()
    # 60%: the 2x slowdown (a speedup of 0.5x) is within it, so not called slower
    assert report.main([new, "--compare", old, "--threshold", "60%"]) == 0
    assert "0 slower" in Path(new, "compare.md").read_text()
    capsys.readouterr()
    for bad, said in (("5", "--threshold 5 is ambiguous: write 5% for a percent"),
                      ("-1%", "--threshold must be 0 or more"), ("five", "a percent or a fraction"),
                      ("nan", "--threshold must be a finite number")):  # fmt: skip
        assert report.main([new, "--compare", old, f"--threshold={bad}"]) == 2
        err = capsys.readouterr().err
        assert said in err and len(err.strip().splitlines()) == 1


def test_fail_on_slower_exits_1_when_a_row_is_slower(tmp_path, capsys):
    new, old = _forked_runs(tmp_path)
    assert report.main([new, "--compare", old]) == 0  # without the flag: a report, exit 0
    assert report.main([new, "--compare", old, "--fail-on", "slower"]) == 1
    assert "--fail-on slower: 1 of 2 rows slower" in capsys.readouterr().err
    page = Path(new, "compare.html").read_text()  # the page shows what compare.md shows
    assert "<th>forks old/new</th>" in page and "<th>interval</th>" in page and "<th>p</th>" in page
    assert report.main([old, "--compare", new, "--fail-on", "slower"]) == 0  # it got faster
    assert report.main([new, "--fail-on", "slower"]) == 2
    assert "--fail-on slower needs --compare OLD" in capsys.readouterr().err
    assert report.main([new, "--compare", old, "--fail-on", "faster"]) == 2
    helptext = report.build_parser().format_help()
    assert "Exit codes" in helptext and "--fail-on" in helptext


def test_the_compared_times_divide_to_the_speedup_shown():
    # two forks far apart: their median (the mean of two) and their geometric mean differ, and
    # the table's times must be the ones its speedup is the ratio of
    old = [
        dataclasses.replace(result(forks=2), fork_medians_ms=[8.9, 19.8], latency_ms_median=14.35)
    ]
    new = [
        dataclasses.replace(result(forks=2), fork_medians_ms=[12.0, 13.7], latency_ms_median=12.85)
    ]
    row = report.compare(new, old).iloc[0]
    assert row["old ms"] == pytest.approx((8.9 * 19.8) ** 0.5)
    assert row["old ms"] / row["new ms"] == pytest.approx(row["speedup"])
